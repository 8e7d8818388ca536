#define _GNU_SOURCE
#include "csprout.h"
#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <sys/socket.h>
#include <unistd.h>

int csprout_accept4_cloexec(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }
int csprout_pipe2_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
int csprout_spawn_setsid_flag(void) { return POSIX_SPAWN_SETSID; }
int csprout_spawn_addclosefrom(void *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, from);
}
int csprout_spawn_addchdir(void *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np((posix_spawn_file_actions_t *)actions, path);
}
int csprout_setns(int fd, int nstype) { return setns(fd, nstype); }
int csprout_unshare(int flags) { return unshare(flags); }

#include <stdlib.h>
#include <string.h>
#include <errno.h>

int csprout_open_pty(char *slave_name, size_t len) {
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) return -1;
    if (grantpt(master) != 0 || unlockpt(master) != 0 || ptsname_r(master, slave_name, len) != 0) {
        int saved = errno;
        close(master);
        errno = saved;
        return -1;
    }
    return master;
}

#include <sys/prctl.h>
int csprout_set_child_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

#include <sys/wait.h>
int csprout_peek_exited_child(void) {
    siginfo_t info;
    info.si_pid = 0;
    if (waitid(P_ALL, 0, &info, WEXITED | WNOWAIT) != 0) return -1;
    return info.si_pid;
}

#include <sys/xattr.h>
int csprout_is_overlay_opaque(const char *path) {
    char value = 0;
    return lgetxattr(path, "trusted.overlay.opaque", &value, 1) == 1 && value == 'y';
}
int csprout_set_overlay_opaque(const char *path) {
    return lsetxattr(path, "trusted.overlay.opaque", "y", 1, 0);
}

#include <sys/eventfd.h>
#include <sys/epoll.h>

int csprout_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }

int csprout_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int csprout_epoll_add(int epfd, int fd, unsigned long long tag) {
    struct epoll_event event = { .events = EPOLLIN, .data.u64 = tag };
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event);
}

int csprout_epoll_remove(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL); }

int csprout_epoll_wait_one(int epfd, int timeout_ms, unsigned long long *tag) {
    struct epoll_event event;
    int n = epoll_wait(epfd, &event, 1, timeout_ms);
    if (n == 1) *tag = event.data.u64;
    return n;
}

#include <linux/openat2.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <unistd.h>

int csprout_open_path_in_root(int rootfd, const char *path) {
    struct open_how how = {0};
    how.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
}
