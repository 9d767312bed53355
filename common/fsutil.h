/*
 * common/fsutil.h - directory trees: make every parent, remove a whole tree.
 *
 * Both are plain blocking system calls on the calling thread and are thread-safe (they
 * keep no state). Symbolic links are never followed when removing.
 */
#ifndef SLUICE_COMMON_FSUTIL_H
#define SLUICE_COMMON_FSUTIL_H

/* Trees deeper than this are not removed (sl_remove_tree returns -ELOOP). */
#define SL_REMOVE_MAX_DEPTH 256

/* mkdir -p: makes path and each missing parent with mode 0755. Returns 0 or -errno. */
int sl_mkdir_p(const char *path);

/*
 * Removes name (relative to the directory open as parent, or AT_FDCWD) and, if it is a
 * real directory, everything in it, making read-only directories of ours writable on
 * the way. Symbolic links are unlinked, never followed. A name that does not exist is
 * not an error. Returns 0 or the first -errno met (it goes on removing what it can).
 */
int sl_remove_tree(int parent, const char *name);

#endif
