/*
 * api/openapi.c - the OpenAPI document, api/openapi.json, compiled into the binary.
 *
 * The document is written by hand as JSON, next to the code it describes, and is the
 * API's contract: tests/integration/check_api.c checks that it names every route of the
 * route table and that every response the tests receive matches its schema. The
 * assembler's .incbin puts the file's bytes (and a NUL) into read-only data, so the text
 * served is exactly the file; the Makefile makes openapi.o depend on it.
 */
#include "api/api_int.h"

__asm__(".section .rodata\n"
        ".global sluice_api_openapi_json\n"
        ".type sluice_api_openapi_json, @object\n"
        "sluice_api_openapi_json:\n"
        ".incbin \"api/openapi.json\"\n"
        ".byte 0\n"
        ".previous\n");

extern const char sluice_api_openapi_json[];

const char *api_openapi_json(void)
{
    return sluice_api_openapi_json;
}
