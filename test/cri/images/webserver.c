// The web server of critest's nginx, hostnet-nginx and httpd images, as far as
// critest looks at them:
//   - every request gets "200 OK" (port $PORT, default 80);
//   - its command line goes to stderr ("Command line: 'httpd -D FOREGROUND'",
//     which the multi-container spec finds in httpd's log);
//   - run as "nginx", it renames itself "nginx: master process ..." (the
//     PodPID/ContainerPID specs read /proc/1/cmdline; `pidof nginx` still
//     finds it by its executable) and writes $PID_FILE;
//   - SIGTERM, SIGQUIT or SIGINT end it at once, also as a pid namespace init.
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static const char kMasterTitle[] = "nginx: master process nginx -g daemon off;";

static void Leave(int sig) {
  (void)sig;
  _exit(0);
}

static const char* BaseName(const char* path) {
  const char* slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

int main(int argc, char** argv) {
  if (argc > 0 && strcmp(BaseName(argv[0]), "nginx") == 0) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
      self[n] = '\0';
      char* title[] = {(char*)kMasterTitle, NULL};
      execv(self, title);  // comm stays "nginx": the file's name
    }
  }
  fprintf(stderr, "Command line: '");
  for (int i = 0; i < argc; ++i) fprintf(stderr, "%s%s", i ? " " : "", i ? argv[i] : BaseName(argv[0]));
  fprintf(stderr, "'\n");

  struct sigaction leave = {.sa_handler = Leave};
  sigaction(SIGTERM, &leave, NULL);
  sigaction(SIGQUIT, &leave, NULL);
  sigaction(SIGINT, &leave, NULL);
  signal(SIGPIPE, SIG_IGN);

  const char* pid_file = getenv("PID_FILE");
  if (pid_file && *pid_file) {
    FILE* f = fopen(pid_file, "w");
    if (f) {
      fprintf(f, "%d\n", (int)getpid());
      fclose(f);
    }
  }
  const char* port_env = getenv("PORT");
  int port = port_env && *port_env ? atoi(port_env) : 80;

  int listener = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
                             .sin_addr = {htonl(INADDR_ANY)}};
  if (listener < 0 || bind(listener, (struct sockaddr*)&addr, sizeof addr) != 0 ||
      listen(listener, 64) != 0) {
    perror("listen");
    return 1;
  }
  static const char kBody[] = "<html><body>It works!</body></html>\n";
  char reply[256];
  int reply_len = snprintf(reply, sizeof reply,
                           "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: %zu\r\n"
                           "Connection: close\r\n\r\n%s",
                           sizeof kBody - 1, kBody);
  for (;;) {
    int c = accept(listener, NULL, NULL);
    if (c < 0) continue;
    struct timeval limit = {.tv_sec = 2};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    char buf[4096];
    size_t got = 0;
    // Read the request head (or what arrives within the limit), then answer.
    while (got < sizeof buf - 1) {
      ssize_t r = read(c, buf + got, sizeof buf - 1 - got);
      if (r <= 0) break;
      got += (size_t)r;
      buf[got] = '\0';
      if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n")) break;
    }
    (void)!write(c, reply, (size_t)reply_len);
    close(c);
  }
}
