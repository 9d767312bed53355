/*
 * common/error.c - descriptions of the sl_error codes.
 */
#include "common/error.h"

const char *sl_strerror(int code)
{
    switch ((enum sl_error)code) {
    case SL_OK:
        return "success";
    case SL_EINVAL:
        return "invalid argument";
    case SL_ENOENT:
        return "no such file or object";
    case SL_EIO:
        return "input/output error";
    case SL_ETOOBIG:
        return "input too large";
    case SL_EPARSE:
        return "parse error";
    case SL_EINVALID:
        return "validation failed";
    case SL_ERANGE:
        return "value out of range";
    case SL_ENOTFOUND:
        return "not found";
    case SL_ETYPE:
        return "wrong type";
    case SL_EEXIST:
        return "already exists";
    case SL_ECONN:
        return "connection failed";
    case SL_ETIMEDOUT:
        return "timed out";
    case SL_ECONFLICT:
        return "conflict";
    case SL_EINTERNAL:
        return "internal error";
    }
    return "unknown error";
}
