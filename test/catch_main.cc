// The one translation unit with Catch2's main: it compiles slowly, so it is
// built once and linked into every test executable.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
