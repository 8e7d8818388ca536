// GNU/Linux calls that Swift's Glibc module does not expose without _GNU_SOURCE.
#ifndef CSPROUT_H
#define CSPROUT_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <pthread.h>

int csprout_accept4_cloexec(int fd);
int csprout_pipe2_cloexec(int fds[2]);
int csprout_spawn_setsid_flag(void);
int csprout_spawn_addchdir(void *actions, const char *path);
/// The child closes every descriptor from `from` up (glibc 2.34+).
int csprout_spawn_addclosefrom(void *actions, int from);
int csprout_close_range_works(void);
int csprout_spawn_addclose(void *actions, int fd);
int csprout_setns(int fd, int nstype);
int csprout_unshare(int flags);
/// An anonymous in-memory file (close-on-exec), or -1 with errno.
int csprout_memfd(const char *name);
/// Opens a PTY master (close-on-exec, unlocked); writes the slave path to slave_name.
int csprout_open_pty(char *slave_name, size_t len);
int csprout_set_child_subreaper(void);
/// Blocks until a child has exited and returns its pid without reaping it
/// (waitid with WNOWAIT); -1 with errno (ECHILD: no children) on failure.
int csprout_peek_exited_child(void);
/// 1 if overlayfs marked the directory opaque (trusted.overlay.opaque = "y").
int csprout_is_overlay_opaque(const char *path);
int csprout_set_overlay_opaque(const char *path);
/// Marks a directory as a top of a hierarchy for ext4's Orlov allocator
/// (FS_TOPDIR_FL, `chattr +T`): its subdirectories are spread over block
/// groups like top-level ones. 0 on success; -1 with errno (ENOTTY,
/// EOPNOTSUPP on file systems without the flag).
int csprout_set_topdir(const char *path);

/// A close-on-exec eventfd (for cgroup memory thresholds).
int csprout_eventfd(void);
/// An epoll instance; add a descriptor with a 64-bit tag; wait for one ready descriptor's tag (0: timeout, -1: error).
int csprout_epoll_create(void);
int csprout_epoll_add(int epfd, int fd, unsigned long long tag);
int csprout_epoll_remove(int epfd, int fd);
int csprout_epoll_wait_one(int epfd, int timeout_ms, unsigned long long *tag);

/// Opens `path` (O_PATH, not following a final symlink) resolved as if
/// `rootfd` were `/`: no `..` or symlink leaves it. -1 and errno on failure.
int csprout_open_path_in_root(int rootfd, const char *path);
/* openat2 with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS: `path` resolved as if
   rootfd were "/" (no ".." or symlink leads out of it), opened with `flags`. */
int csprout_open_in_root(int rootfd, const char *path, int flags, int mode);

/// Unix sockets in the abstract namespace (no file; scoped to the network namespace).
int csprout_unix_listen_abstract(const char *name);
int csprout_unix_connect_abstract(const char *name);
/// A request's first message: `data`, up to 8 descriptors (SCM_RIGHTS) and
/// the sender's own pid, uid and gid (SCM_CREDENTIALS, which the kernel checks).
ssize_t csprout_send_request(int sock, const void *data, size_t len, const int *fds, int count);
/// Receives it: descriptors are close-on-exec; `has_credentials` says whether ids came with it.
ssize_t csprout_receive_request(int sock, void *data, size_t len, int *fds, int max, int *count,
                                pid_t *pid, uid_t *uid, gid_t *gid, int *has_credentials);

/// A read-write lock in which a waiting writer goes ahead of new readers.
int csprout_rwlock_init_writer_preferred(pthread_rwlock_t *lock);

/// What `csprout_spawn_in_namespace` starts, and how far a failed start got.
struct csprout_ns_spawn {
    int namespace_fd;             /* a mount namespace to enter, or -1 */
    const char *overlay_options;  /* an overlay mount to make there first, or NULL */
    const char *mount_point;
    const char *path;             /* the program, an absolute path */
    char *const *argv;
    char *const *envp;
    int stdout_fd;                /* -1: /dev/null (stdin is always /dev/null) */
    int stderr_fd;
    volatile int error;           /* set by a start that failed: errno */
    volatile int stage;           /* 1 entering the namespace, 2 mounting, 3 descriptors, 4 exec */
};
/// Starts `path` in its own process group with default signal handling and
/// only 0, 1 and 2 open, inside the namespace after the mount. Returns the
/// pid, or -1 with errno (and `error`, `stage`) set.
pid_t csprout_spawn_in_namespace(struct csprout_ns_spawn *s);
/// A descriptor that becomes readable when child `pid` exits; -1 and errno where the kernel has none.
int csprout_pidfd_open(pid_t pid);

#endif
