/*
 * worker/sigv4.h - AWS Signature Version 4, as pure functions.
 *
 * Signs one HTTP request for an AWS-style service (S3, or any other: the signer knows
 * nothing about S3 except the two choices S3 makes, path normalization off and the
 * payload hash given by the caller). Both forms are here: the Authorization header
 * (sigv4_sign) and the presigned URL's query string (sigv4_presign). Every step's text is
 * kept in the result - canonical request, string to sign, signature - so that tests can
 * compare each one byte for byte with AWS's test vectors (../shared/vectors/sigv4/), and
 * so that a 403 SignatureDoesNotMatch can be debugged by comparing with what S3 says it
 * expected.
 *
 * What the caller gives: the method; the path *decoded* (the signer percent-encodes it,
 * every byte but A-Z a-z 0-9 - . _ ~ and '/', once, which is what S3 and the test suites
 * expect; with normalize_path, '.'/'..' segments are resolved and empty segments dropped
 * first, as for every service but S3); the query string as it will be sent (each name and
 * value is decoded and re-encoded canonically, then sorted); the headers to sign (names
 * in any case, values trimmed and inner runs of spaces collapsed; repeated names are
 * joined with ',' in order). Host and x-amz-date are ordinary headers here: the caller
 * includes them (sigv4_sign refuses a request without x-amz-date, sigv4_presign one with
 * it). The payload hash is hex SHA-256 of the body, or "UNSIGNED-PAYLOAD".
 *
 * Secrets: the secret key is read during the call and only derived keys live on the
 * stack, wiped before return; no function here logs.
 *
 * Ownership: results are newly allocated, freed with sigv4_result_release(). Threads:
 * every function is reentrant.
 */
#ifndef SLUICE_WORKER_SIGV4_H
#define SLUICE_WORKER_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIGV4_ALGORITHM        "AWS4-HMAC-SHA256"
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
/* hex SHA-256 of the empty string */
#define SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct sigv4_header {
    const char *name;
    const char *value;
};

struct sigv4_request {
    const char *method; /* "GET", "PUT", ... */
    const char *path;   /* decoded, starting with '/' */
    const char *query;  /* as sent, percent-encoded, without '?'; NULL or "": none */
    const struct sigv4_header *headers; /* every header to sign */
    size_t n_headers;
    const char *payload_hash; /* hex SHA-256 of the body, or SIGV4_UNSIGNED_PAYLOAD */
    bool normalize_path;      /* true for generic services, false for S3 */

    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* presign only: becomes X-Amz-Security-Token; NULL: none
                                * (for sigv4_sign, pass it as an x-amz-security-token header) */
    const char *region;        /* "us-east-1" */
    const char *service;       /* "s3" */
    const char *amz_date;      /* "20150830T123600Z"; sigv4_sign reads it from the headers */
    int64_t expires_s;         /* presign only: X-Amz-Expires, 1..604800 */
};

struct sigv4_result {
    char *canonical_request;
    char *string_to_sign;
    char signature[65];   /* hex */
    char *signed_headers; /* "host;x-amz-date" */
    char *authorization;  /* sigv4_sign: the Authorization header's value */
    char *query;          /* sigv4_presign: the query string to send, signature included */
};

/*
 * Signs req for an Authorization header. x-amz-date must be among req->headers (its
 * value is the request time). Returns 0 and fills *out, or SL_EINVAL for a malformed
 * request (no method, a path not starting with '/', no x-amz-date, a date that is not
 * YYYYMMDDTHHMMSSZ, a bad percent escape in the query, a header name with a space or
 * colon, no credentials, region or service).
 */
int sigv4_sign(struct sigv4_result *out, const struct sigv4_request *req);

/*
 * Signs req as a presigned URL: X-Amz-Algorithm, -Credential, -Date (req->amz_date),
 * -Expires (req->expires_s), -SignedHeaders and, with a session token, -Security-Token
 * join the query. Returns 0 and fills *out (out->query is the whole query string to send,
 * X-Amz-Signature last), or SL_EINVAL as above (and for an x-amz-date header or an
 * expiry outside 1..604800 s).
 */
int sigv4_presign(struct sigv4_result *out, const struct sigv4_request *req);

/* Frees what a successful sign left in r, and zeroes it. */
void sigv4_result_release(struct sigv4_result *r);

/*
 * Appends s[0..len) percent-encoded to sb: every byte but A-Z a-z 0-9 - . _ ~ (and '/'
 * when keep_slash) becomes %XX with upper-case hex. What SigV4 calls UriEncode.
 */
struct strbuf;
void sigv4_uri_encode(struct strbuf *sb, const char *s, size_t len, bool keep_slash);

/* Writes the hex SHA-256 of data[0..len) and a NUL into hex[65]. */
void sigv4_sha256_hex(char hex[65], const void *data, size_t len);

/* Formats unix time t as "YYYYMMDDTHHMMSSZ" into buf[17]. */
void sigv4_amz_date(char buf[17], int64_t t);

#endif
