/*
 * worker/archive.h - directory artifacts as tar archives (optionally gzip'd), and their
 * safe extraction.
 *
 * A directory output artifact travels as one object: archive_write_dir() writes a POSIX
 * tar (ustar, with pax extended headers for names over 100 bytes and files over 8 GiB) of
 * the tree, optionally gzip-compressed, in a stable order (names sorted) so the same tree
 * gives the same bytes. Regular files, directories and symbolic links are archived (links
 * as links, never followed); anything else (sockets, devices, FIFOs) is refused.
 *
 * archive_extract() reads such an archive - or any ustar/pax/GNU tar, gzip'd or not
 * (detected by its magic) - into a directory, and is written for archives from anyone,
 * since an input artifact may come from a URI. It refuses, with the entry's name in the
 * message:
 *   - absolute names and names with a '..' component (zip-slip),
 *   - symbolic links whose target is absolute or leaves the directory (lexically, from
 *     the link's own place),
 *   - hard links, character and block devices, FIFOs, and unknown entry types,
 *   - any entry whose path goes through a symbolic link (every component is opened with
 *     O_NOFOLLOW relative to its parent), so a link planted by an earlier entry cannot
 *     redirect a later write,
 *   - truncated archives and headers whose checksum is wrong.
 * Files get the archive's permission bits without setuid/setgid/sticky, and are owned by
 * the extracting user. On a refusal, what was extracted so far stays in dest: callers
 * extract into a fresh temporary directory and rename it into place only on success
 * (worker/artifacts.c does).
 *
 * Memory is constant (one 64 KiB block buffer, zlib's state). Errors: 0 or SL_EINVAL
 * (an unsafe or malformed archive), SL_EIO (reading or writing files), SL_ENOENT (the
 * source is missing); the detail goes to err. Threads: reentrant.
 */
#ifndef SLUICE_WORKER_ARCHIVE_H
#define SLUICE_WORKER_ARCHIVE_H

#include "common/strbuf.h"

#include <stdbool.h>

/*
 * Writes the tree under dir to the file out_path (created or truncated, mode 0644): a tar,
 * gzip-compressed when gzip is true. Entry names are relative to dir ("a/b.txt"); dir
 * itself is not an entry. Returns 0 or an error above.
 */
int archive_write_dir(const char *dir, const char *out_path, bool gzip, struct strbuf *err);

/*
 * Extracts the tar (plain or gzip'd) at archive_path into the existing directory dest,
 * applying the rules above. Returns 0 or an error above.
 */
int archive_extract(const char *archive_path, const char *dest, struct strbuf *err);

#endif
