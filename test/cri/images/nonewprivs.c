// nonewprivs:1.3's program: installed setuid root, it prints the effective
// uid it runs with (0 unless no_new_privs kept the caller's uid).
#include <stdio.h>
#include <unistd.h>

int main(void) {
  printf("Effective uid: %d\n", (int)geteuid());
  return 0;
}
