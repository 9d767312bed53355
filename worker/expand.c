/*
 * worker/expand.c - $(NAME) expansion with Kubernetes' rules (see expand.h).
 *
 * A transcription of the kubelet's Expand()/tryReadVariableName(): one pass over the
 * input, copying the text between operators and deciding at each '$' (not the last
 * byte) what the operator and the bytes after it become.
 */
#include "worker/expand.h"
#include "common/strbuf.h"

#include <string.h>

size_t worker_expand(struct strbuf *out, const char *in, worker_expand_lookup_fn lookup, void *data)
{
    size_t done = 0; /* in[0..done) is copied or consumed */
    size_t replaced = 0;

    for (size_t i = 0; in[i]; i++) {
        if (in[i] != '$' || in[i + 1] == '\0')
            continue;
        strbuf_add(out, in + done, i - done);
        char next = in[i + 1];
        if (next == '$') {
            strbuf_addch(out, '$'); /* escaped operator */
            i++;
        } else if (next == '(') {
            const char *name = in + i + 2;
            const char *close = strchr(name, ')');
            if (close) {
                size_t len = (size_t)(close - name);
                const char *value = lookup ? lookup(data, name, len) : NULL;
                if (value) {
                    strbuf_addstr(out, value);
                    replaced++;
                } else {
                    strbuf_add(out, in + i, len + 3); /* "$(" name ")" as written */
                }
                i = (size_t)(close - in);
            } else {
                strbuf_addstr(out, "$("); /* incomplete reference: kept, scanning goes on */
                i++;
            }
        } else {
            strbuf_add(out, in + i, 2); /* '$' and the byte after it, as written */
            i++;
        }
        done = i + 1;
    }
    strbuf_addstr(out, in + done);
    return replaced;
}
