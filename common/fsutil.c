/*
 * common/fsutil.c - making and removing directory trees.
 */
#include "common/fsutil.h"

#include "common/xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int sl_mkdir_p(const char *path)
{
    char *dir = xstrdup(path);
    int rc = 0;
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
            rc = -errno;
            break;
        }
        if (c == '\0')
            break;
        *p = c;
    }
    free(dir);
    return rc;
}

static int remove_at(int parent, const char *name, int depth)
{
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOTDIR || errno == ELOOP) /* a file or a symbolic link */
            return unlinkat(parent, name, 0) < 0 && errno != ENOENT ? -errno : 0;
        return errno == ENOENT ? 0 : -errno;
    }
    if (depth >= SL_REMOVE_MAX_DEPTH) {
        close(fd);
        return -ELOOP;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_uid == geteuid() && (st.st_mode & 0700) != 0700)
        (void)fchmod(fd, st.st_mode | 0700); /* a read-only checkout: let us empty it */
    DIR *d = fdopendir(fd);
    if (!d) {
        int err = errno;
        close(fd);
        return -err;
    }
    int rc = 0;
    /* Entries removed while reading may make readdir() skip others on some file
     * systems: read again until a pass removes nothing more (at most a few). */
    for (int pass = 0; pass < 4; pass++) {
        size_t removed = 0;
        struct dirent *de;
        rewinddir(d);
        while ((de = readdir(d)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                continue;
            int r = S_ISDIR(st.st_mode) ? remove_at(fd, de->d_name, depth + 1)
                                        : (unlinkat(fd, de->d_name, 0) < 0 ? -errno : 0);
            if (r < 0 && rc == 0)
                rc = r;
            removed += r == 0;
        }
        if (removed == 0)
            break;
    }
    closedir(d);
    if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT && rc == 0)
        rc = -errno;
    return rc;
}

int sl_remove_tree(int parent, const char *name)
{
    return remove_at(parent, name, 0);
}
