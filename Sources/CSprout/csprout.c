#define _GNU_SOURCE
#include "csprout.h"
#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <errno.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int csprout_accept4_cloexec(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }
int csprout_pipe2_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
int csprout_spawn_setsid_flag(void) { return POSIX_SPAWN_SETSID; }
int csprout_spawn_addclosefrom(void *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, from);
}
int csprout_close_range_works(void) {
    // What glibc's closefrom action asks: close_range(from, ~0U, 0). gVisor
    // 20240729 refuses that (EINVAL) and glibc falls back to reading
    // /proc/self/fd in the child; nothing is open at INT_MAX, so on Linux
    // this closes nothing and succeeds.
    return close_range(0x7FFFFFFFU, ~0U, 0) == 0;
}
int csprout_spawn_addclose(void *actions, int fd) {
    return posix_spawn_file_actions_addclose((posix_spawn_file_actions_t *)actions, fd);
}
int csprout_spawn_addchdir(void *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np((posix_spawn_file_actions_t *)actions, path);
}
int csprout_setns(int fd, int nstype) { return setns(fd, nstype); }
int csprout_unshare(int flags) { return unshare(flags); }
#include <sys/mman.h>
int csprout_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

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
int csprout_set_topdir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int flags = 0;
    int result = ioctl(fd, FS_IOC_GETFLAGS, &flags);
    if (result == 0 && !(flags & FS_TOPDIR_FL)) {
        flags |= FS_TOPDIR_FL;
        result = ioctl(fd, FS_IOC_SETFLAGS, &flags);
    }
    int saved = errno;
    close(fd);
    errno = saved;
    return result;
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

int csprout_open_in_root(int rootfd, const char *path, int flags, int mode) {
    struct open_how how = {0};
    how.flags = (unsigned long long)(flags | O_CLOEXEC);
    how.mode = (flags & O_CREAT) ? (unsigned long long)mode : 0;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
}

#include <sys/un.h>
#include <stddef.h>

/* An abstract Unix socket address ("\0" + name): no file, scoped to the
   network namespace (the sandbox). Returns the address length, or -1. */
static int abstract_address(const char *name, struct sockaddr_un *addr) {
    size_t n = strlen(name);
    if (n + 1 > sizeof(addr->sun_path)) { errno = ENAMETOOLONG; return -1; }
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    memcpy(addr->sun_path + 1, name, n);
    return (int)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

int csprout_unix_listen_abstract(const char *name) {
    struct sockaddr_un addr;
    int len = abstract_address(name, &addr);
    if (len < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    /* Accepted sockets inherit it: a request's SCM_CREDENTIALS are delivered
       (the peer credentials of getsockopt(SO_PEERCRED) are wrong under
       gVisor 20240729: they name the listener's user). */
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) != 0 ||
        bind(fd, (struct sockaddr *)&addr, (socklen_t)len) != 0 || listen(fd, 64) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int csprout_unix_connect_abstract(const char *name) {
    struct sockaddr_un addr;
    int len = abstract_address(name, &addr);
    if (len < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    while (connect(fd, (struct sockaddr *)&addr, (socklen_t)len) != 0) {
        if (errno == EINTR) continue;
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* The control buffer of a request: up to 8 descriptors and the sender's credentials. */
#define REQUEST_CONTROL (CMSG_SPACE(sizeof(int) * 8) + CMSG_SPACE(sizeof(struct ucred)))

ssize_t csprout_send_request(int sock, const void *data, size_t len, const int *fds, int count) {
    union { char buf[REQUEST_CONTROL]; struct cmsghdr align; } control;
    if (count < 0 || count > 8) { errno = EINVAL; return -1; }
    memset(&control, 0, sizeof(control));
    struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                          .msg_controllen = CMSG_SPACE(sizeof(struct ucred)) + (count > 0 ? CMSG_SPACE(sizeof(int) * count) : 0) };
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    /* The kernel lets a process name only its own ids here: the receiver can trust them. */
    struct ucred cred = { .pid = getpid(), .uid = getuid(), .gid = getgid() };
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_CREDENTIALS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(cred));
    memcpy(CMSG_DATA(cmsg), &cred, sizeof(cred));
    if (count > 0) {
        cmsg = CMSG_NXTHDR(&msg, cmsg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * count);
    }
    ssize_t n;
    do { n = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n;
}

ssize_t csprout_receive_request(int sock, void *data, size_t len, int *fds, int max, int *count,
                                pid_t *pid, uid_t *uid, gid_t *gid, int *has_credentials) {
    union { char buf[REQUEST_CONTROL]; struct cmsghdr align; } control;
    struct iovec iov = { .iov_base = data, .iov_len = len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof(control.buf) };
    *count = 0;
    *has_credentials = 0;
    ssize_t n;
    do { n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n < 0) return n;
    for (struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level != SOL_SOCKET) continue;
        if (cmsg->cmsg_type == SCM_CREDENTIALS && cmsg->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
            struct ucred cred;
            memcpy(&cred, CMSG_DATA(cmsg), sizeof(cred));
            *pid = cred.pid;
            *uid = cred.uid;
            *gid = cred.gid;
            *has_credentials = 1;
        } else if (cmsg->cmsg_type == SCM_RIGHTS) {
            int got = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int *received = (int *)CMSG_DATA(cmsg);
            for (int i = 0; i < got; i++) {
                if (*count < max) fds[(*count)++] = received[i];
                else close(received[i]);
            }
        }
    }
    return n;
}

#include <pthread.h>
/* A read-write lock that lets a waiting writer in ahead of new readers
   (glibc's default would let a steady stream of readers starve it). */
int csprout_rwlock_init_writer_preferred(pthread_rwlock_t *lock) {
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    return rc;
}

/* Starting a program inside a mount namespace, after an overlay mount there:
   what `nsenter --mount=NS -- sh -c 'mount ... && exec PROGRAM'` does, in
   one clone instead of three programs started one after another. */
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <signal.h>
#include <pthread.h>

static int csprout_ns_child(void *arg) {
    struct csprout_ns_spawn *s = arg;
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < _NSIG; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    s->stage = 1;
    if (s->namespace_fd >= 0 && setns(s->namespace_fd, CLONE_NEWNS) != 0) goto fail;
    s->stage = 2;
    if (s->overlay_options != NULL && mount("overlay", s->mount_point, "overlay", 0, s->overlay_options) != 0) goto fail;
    s->stage = 3;
    if (setpgid(0, 0) != 0) goto fail;
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) goto fail;
    if (dup2(null, 0) < 0) goto fail;
    if (dup2(s->stdout_fd >= 0 ? s->stdout_fd : null, 1) < 0) goto fail;
    if (dup2(s->stderr_fd >= 0 ? s->stderr_fd : null, 2) < 0) goto fail;
    if (close_range(3, ~0U, 0) != 0) goto fail;
    s->stage = 4;
    execve(s->path, s->argv, s->envp);
fail:
    s->error = errno;
    _exit(127);
}

pid_t csprout_spawn_in_namespace(struct csprout_ns_spawn *s) {
    const size_t stack_size = 64 * 1024;
    char *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return -1;
    // No handler of this process may run in the child, which shares its memory until it execs.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    s->error = 0;
    s->stage = 0;
    pid_t pid = clone(csprout_ns_child, stack + stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, s);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, stack_size);
    if (pid < 0) {
        errno = saved;
        return -1;
    }
    // CLONE_VFORK: the child has exec'd or exited by now.
    if (s->error != 0) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        errno = s->error;
        return -1;
    }
    return pid;
}

int csprout_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }
