/* A small JSON reader and string writer: enough for a task to check its arguments and
 * config and to build its result, with no library beyond wasi-libc. */
#ifndef STAMP_JSON_H
#define STAMP_JSON_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value {
    json_type type;
    bool boolean;
    double number;
    char *string;              /* JSON_STRING: UTF-8, NUL-terminated (embedded NULs kept in length) */
    size_t length;             /* JSON_STRING: bytes; JSON_ARRAY / JSON_OBJECT: element count */
    struct json_value *items;  /* JSON_ARRAY / JSON_OBJECT: the elements (values) */
    char **keys;               /* JSON_OBJECT: the key of each element */
} json_value;

/* Parses `length` bytes of `text` into `out`. On failure returns false and writes a reason
 * (at most `error_size` bytes) into `error`. */
bool json_parse(const char *text, size_t length, json_value *out, char *error, size_t error_size);

/* Frees what json_parse allocated below `value`. */
void json_free(json_value *value);

/* The member `key` of an object, or NULL. */
const json_value *json_get(const json_value *object, const char *key);

/* A growable byte buffer for building JSON text. */
typedef struct {
    char *data;
    size_t length;
    size_t capacity;
} json_buffer;

void json_buffer_append(json_buffer *buffer, const char *bytes, size_t length);

/* Appends `string` as a quoted, escaped JSON string. */
void json_buffer_string(json_buffer *buffer, const char *string, size_t length);

#endif
