/* cowspec-call: rename(2) and link(2) made inside a running container.
 *
 * The Docker store driver builds this file with `gcc -static`, bind-mounts
 * it into a container it creates, runs it as the container's first process
 * (`cowspec-call wait`) and calls it with `docker exec` for the renames and
 * links made in a container that mounts volumes, whose paths may lie on two
 * mounts (the rootfs and a volume, or two volumes). It makes the system call itself, on the container's own mounts,
 * with no fallback (busybox mv copies on EXDEV), and prints one line per
 * call: "ok", or the errno's name and number ("EXDEV 18"); the driver reads
 * the number and names it as the kernel driver does (Python's errno table).
 *
 *   cowspec-call wait                        wait for SIGTERM, then exit 0
 *   cowspec-call rename SRC DST [link A B]...  one line per call, in order
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void stop(int signal_number) {
    (void)signal_number;
    _exit(0);
}

static _Noreturn void wait_for_stop(void) {
    /* As PID 1 of its namespace, a signal without a handler would be ignored. */
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    for (;;)
        pause();
}

static void report(int result) {
    if (result == 0) {
        puts("ok");
        return;
    }
    int number = errno;
    const char *name = strerrorname_np(number);
    printf("%s %d\n", name != NULL ? name : "E?", number);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "wait") == 0)
        wait_for_stop();
    if (argc < 4 || (argc - 1) % 3 != 0) {
        fputs("usage: cowspec-call wait | cowspec-call (rename|link) SRC DST ...\n", stderr);
        return 2;
    }
    for (int at = 1; at < argc; at += 3) {
        if (strcmp(argv[at], "rename") == 0)
            report(rename(argv[at + 1], argv[at + 2]));
        else if (strcmp(argv[at], "link") == 0)
            report(link(argv[at + 1], argv[at + 2]));
        else {
            fprintf(stderr, "cowspec-call: unknown call %s\n", argv[at]);
            return 2;
        }
        fflush(stdout);
    }
    return 0;
}
