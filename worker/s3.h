/*
 * worker/s3.h - a small S3 client on libcurl: objects to and from files, signed with AWS
 * Signature Version 4 (worker/sigv4.h).
 *
 * Works with AWS S3, MinIO, Ceph RGW and s3rver: path-style (http://host/bucket/key) or
 * virtual-host style (http://bucket.host/key) addressing, any region, credentials given
 * by the caller (worker/artifacts.h reads them from the environment or files).
 *
 * Transfers stream between a file and the network in constant memory: an upload reads
 * its file with pread() from curl's read callback, a download writes each received
 * block to its file. Objects larger than multipart_threshold go up as a multipart upload
 * whose parts are sent parallel_parts at a time (one curl multi handle, so the parts share
 * connections); a failed multipart upload is aborted so no parts are left behind.
 *
 * Integrity: the MD5 of every upload body (a single PUT, each part) is computed by a
 * hashing thread beside the transfer, reading the same range of the file (from the page
 * cache), and compared with the ETag S3 returns; a mismatch is retried, hashed afresh.
 * (Content-MD5 would have to be known before sending: a full read of the file before
 * the first byte goes out.) A multipart object records its part size in
 * x-amz-meta-sluice-part-size, so a download can recompute the multipart ETag (MD5 of the
 * parts' MD5s, "-N"); a single-part object's ETag is the MD5 of its bytes. A download is
 * one GET (no HEAD first: its own headers give the size, ETag and part size) whose bytes
 * are gathered in buffers of 512 KiB, each written to the file and then hashed by a
 * hashing thread; a download whose bytes do not match is an error (SL_EIO) and its file
 * is removed. Objects whose ETag is not an
 * MD5 (SSE-KMS, SSE-C, or multipart without our metadata) are checked for length only.
 *
 * Retries: connection failures, resets, timeouts, 500/502/503/504 (503 SlowDown included)
 * and 429 are retried up to max_attempts times per request with exponential backoff and
 * full jitter; a download resumes where it stopped (Range + If-Match on the ETag, so a
 * changed object fails with SL_ECONFLICT rather than mixing two versions; a server that
 * ignores Range and sends the whole object again is taken from its first byte).
 * 403 (AccessDenied, SignatureDoesNotMatch, ...), 404 (NoSuchKey, NoSuchBucket) and
 * other 4xx are not retried: they come back at once with S3's code and message.
 *
 * Redirects are never followed (S3 answers 301/307 when the region is wrong: the error
 * names the bucket's region from x-amz-bucket-region), and only http:// and https://
 * endpoints are accepted (CURLOPT_PROTOCOLS_STR), so no URL can make the client speak
 * another protocol.
 *
 * Errors: 0 or a negative code from common/error.h - SL_ENOENT (no such key or bucket),
 * SL_EINVAL (bad arguments or configuration), SL_ECONN (could not connect, or retries
 * exhausted on transport errors), SL_EIO (S3 refused, a checksum mismatch, a local file
 * error), SL_ETIMEDOUT (the transfer stalled past the timeouts), SL_ECONFLICT (the object
 * changed during a resumed download, after the retries). The detail goes to err, one
 * lower-case line with the bucket and key and, from S3, its code and message:
 *   s3 GET s3://art/iris/r1/train/1/model: 403 AccessDenied: Access Denied
 * Credentials never appear in messages or logs.
 *
 * Ownership and threads: s3_client_new() copies the configuration; the client is
 * read-only afterwards, so any number of threads may run transfers on one client at
 * once (each call uses curl handles of its own). Every call blocks until its transfer is
 * done; a caller that must be able to stop one passes a cancel flag (set from any
 * thread) and gets SL_EIO with "cancelled" within about a second. A transfer runs one
 * hashing thread per request in flight (up to parallel_parts for a multipart upload),
 * each with a 512 KiB buffer (four for a download), all joined before the call returns.
 */
#ifndef SLUICE_WORKER_S3_H
#define SLUICE_WORKER_S3_H

#include "common/strbuf.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define S3_DEFAULT_PART_SIZE     (16u * 1024 * 1024)
#define S3_MIN_PART_SIZE         (5u * 1024 * 1024) /* S3's limit, but for the last part */
#define S3_DEFAULT_THRESHOLD     (64ull * 1024 * 1024)
#define S3_DEFAULT_PARALLEL      4
#define S3_DEFAULT_MAX_ATTEMPTS  5
#define S3_DEFAULT_RETRY_BASE_MS 200
#define S3_MAX_PARTS             10000
#define S3_MAX_PUT_SIZE          (5ull << 30) /* S3's limit for one PUT: larger is multipart */

struct s3_config {
    const char *endpoint;          /* "https://s3.eu-west-3.amazonaws.com", "http://127.0.0.1:9000";
                                    * http or https only; an optional path is kept as a prefix */
    const char *region;            /* "us-east-1" when NULL */
    const char *bucket;            /* required */
    bool path_style;               /* true: endpoint/bucket/key (MinIO, Ceph, s3rver); false:
                                    * bucket.endpoint/key (AWS's default) */
    const char *access_key_id;     /* NULL: unsigned requests (a public bucket) */
    const char *secret_access_key; /* with access_key_id */
    const char *session_token;     /* NULL: none */
    uint64_t multipart_threshold;  /* bytes; above it (or 5 GiB), multipart; 0: 64 MiB */
    uint64_t part_size;            /* bytes, >= 5 MiB; 0: 16 MiB (grown to fit 10000 parts) */
    int parallel_parts;            /* parts in flight at once; 0: 4 */
    int max_attempts;              /* tries per request; 0: 5 */
    int64_t retry_base_ms;         /* first backoff cap; doubles each retry; 0: 200 ms */
    int64_t connect_timeout_ms;    /* 0: 10 s */
    int64_t stall_timeout_ms;      /* a transfer moving no byte this long fails; 0: 60 s */
};

struct s3_client;

/* What s3_head() and s3_get_file() tell about an object. */
struct s3_object_info {
    uint64_t size;
    char etag[80]; /* without quotes */
    char kind[16]; /* x-amz-meta-sluice-kind ("file", "dir") as stored by put, or "" */
};

/*
 * Creates a client. Returns 0 and sets *out, or SL_EINVAL with the reason in err (an
 * endpoint that is not http(s)://host[:port][/path], no bucket, a bucket name unusable
 * with virtual-host addressing, a secret without a key id, a part size under 5 MiB).
 */
int s3_client_new(struct s3_client **out, const struct s3_config *cfg, struct strbuf *err);

/* Frees c (credentials are wiped). NULL is fine. */
void s3_client_free(struct s3_client *c);

/* "s3://bucket/key" of a key, for messages; newly allocated. */
char *s3_url(const struct s3_client *c, const char *key);

/*
 * Uploads the file at path as key: one PUT up to the multipart threshold, a multipart
 * upload above it. metadata: NULL or NULL-terminated "name=value" pairs stored as
 * x-amz-meta-<name>. cancel: NULL, or a flag that stops the transfer when it becomes
 * non-zero. Returns 0 (and the object's info in *info if not NULL) or an error above.
 */
int s3_put_file(struct s3_client *c, const char *key, const char *path, const char *const *metadata,
                const atomic_int *cancel, struct s3_object_info *info, struct strbuf *err);

/*
 * Downloads key into the file at path: written to "<path>.sluice-part" (created 0644),
 * checked, then renamed over path; on failure nothing is left at either name.
 * Returns 0 (and *info if not NULL) or an error above (SL_ENOENT: no such key).
 */
int s3_get_file(struct s3_client *c, const char *key, const char *path, const atomic_int *cancel,
                struct s3_object_info *info, struct strbuf *err);

/* HEAD of key. Returns 0 and fills *info, SL_ENOENT, or another error above. */
int s3_head(struct s3_client *c, const char *key, struct s3_object_info *info, struct strbuf *err);

/* Deletes key (S3 answers 204 whether it existed or not). Returns 0 or an error. */
int s3_delete(struct s3_client *c, const char *key, struct strbuf *err);

#endif
