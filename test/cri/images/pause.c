// The sandbox image's /pause (what registry.k8s.io/pause does): sleeps until
// SIGINT or SIGTERM, reaping the children a shared pid namespace leaves it.
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void Leave(int sig) {
  (void)sig;
  _exit(0);
}

static void Reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction leave = {.sa_handler = Leave};
  struct sigaction reap = {.sa_handler = Reap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGINT, &leave, NULL);
  sigaction(SIGTERM, &leave, NULL);
  sigaction(SIGCHLD, &reap, NULL);
  for (;;) pause();
}
