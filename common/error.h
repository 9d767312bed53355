/*
 * common/error.h - the one table of error codes used by every module.
 *
 * Functions that can fail return int: 0 on success or one of the negative codes
 * below. sl_strerror() turns a code into a short lower-case phrase. Detailed,
 * user-facing context (file:line:column, dag_id=...) travels separately, in the
 * diagnostics of the module that produced it.
 */
#ifndef SLUICE_COMMON_ERROR_H
#define SLUICE_COMMON_ERROR_H

enum sl_error {
    SL_OK = 0,
    SL_EINVAL = -1,     /* an argument or input is malformed */
    SL_ENOENT = -2,     /* the named thing does not exist */
    SL_EIO = -3,        /* reading or writing failed */
    SL_ETOOBIG = -4,    /* input exceeds a configured size limit */
    SL_EPARSE = -5,     /* input could not be parsed */
    SL_EINVALID = -6,   /* input parsed but failed validation */
    SL_ERANGE = -7,     /* a number is out of its allowed range */
    SL_ENOTFOUND = -8,  /* a lookup found nothing (e.g. no next cron time) */
    SL_ETYPE = -9,      /* a value has the wrong type */
    SL_EEXIST = -10,    /* the thing already exists */
    SL_ECONN = -11,     /* a connection failed or was lost */
    SL_ETIMEDOUT = -12, /* an operation did not finish in time */
    SL_ECONFLICT = -13, /* a concurrent change conflicts with this one */
    SL_EINTERNAL = -14, /* an invariant was broken: a bug */
};

/* Returns a static, lower-case description of an sl_error code; never NULL. */
const char *sl_strerror(int code);

#endif
