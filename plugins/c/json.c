/* A small JSON reader and string writer; see json.h. */
#include "json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *at;
    const char *end;
    char *error;
    size_t error_size;
    int depth;
} reader;

#define MAX_DEPTH 128

static bool failed(reader *r, const char *what) {
    if (r->error && r->error_size) {
        snprintf(r->error, r->error_size, "%s at byte %ld", what, (long)(r->end - r->at));
    }
    return false;
}

static void skip_space(reader *r) {
    while (r->at < r->end && (*r->at == ' ' || *r->at == '\t' || *r->at == '\n' || *r->at == '\r')) {
        r->at++;
    }
}

static bool literal(reader *r, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(r->end - r->at) < n || memcmp(r->at, word, n) != 0) {
        return failed(r, "unexpected token");
    }
    r->at += n;
    return true;
}

static void *grow(void *items, size_t count, size_t size) {
    void *bigger = realloc(items, (count + 1) * size);
    if (!bigger) {
        abort();
    }
    return bigger;
}

static void put_utf8(json_buffer *b, uint32_t code) {
    char bytes[4];
    size_t n;
    if (code < 0x80) {
        bytes[0] = (char)code;
        n = 1;
    } else if (code < 0x800) {
        bytes[0] = (char)(0xC0 | (code >> 6));
        bytes[1] = (char)(0x80 | (code & 0x3F));
        n = 2;
    } else if (code < 0x10000) {
        bytes[0] = (char)(0xE0 | (code >> 12));
        bytes[1] = (char)(0x80 | ((code >> 6) & 0x3F));
        bytes[2] = (char)(0x80 | (code & 0x3F));
        n = 3;
    } else {
        bytes[0] = (char)(0xF0 | (code >> 18));
        bytes[1] = (char)(0x80 | ((code >> 12) & 0x3F));
        bytes[2] = (char)(0x80 | ((code >> 6) & 0x3F));
        bytes[3] = (char)(0x80 | (code & 0x3F));
        n = 4;
    }
    json_buffer_append(b, bytes, n);
}

static bool hex4(reader *r, uint32_t *code) {
    *code = 0;
    for (int i = 0; i < 4; i++, r->at++) {
        if (r->at >= r->end) {
            return failed(r, "truncated \\u escape");
        }
        char c = *r->at;
        uint32_t digit;
        if (c >= '0' && c <= '9') {
            digit = (uint32_t)(c - '0');
        } else if (c >= 'a' && c <= 'f') {
            digit = (uint32_t)(c - 'a' + 10);
        } else if (c >= 'A' && c <= 'F') {
            digit = (uint32_t)(c - 'A' + 10);
        } else {
            return failed(r, "bad \\u escape");
        }
        *code = *code * 16 + digit;
    }
    return true;
}

static bool read_string(reader *r, char **out, size_t *length) {
    json_buffer b = {0};
    r->at++; /* the opening quote */
    while (r->at < r->end && *r->at != '"') {
        unsigned char c = (unsigned char)*r->at;
        if (c < 0x20) {
            free(b.data);
            return failed(r, "control character in string");
        }
        if (c != '\\') {
            json_buffer_append(&b, r->at++, 1);
            continue;
        }
        if (++r->at >= r->end) {
            break;
        }
        char escape = *r->at++;
        const char *plain = NULL;
        switch (escape) {
        case '"': plain = "\""; break;
        case '\\': plain = "\\"; break;
        case '/': plain = "/"; break;
        case 'b': plain = "\b"; break;
        case 'f': plain = "\f"; break;
        case 'n': plain = "\n"; break;
        case 'r': plain = "\r"; break;
        case 't': plain = "\t"; break;
        case 'u': {
            uint32_t code;
            if (!hex4(r, &code)) {
                free(b.data);
                return false;
            }
            if (code >= 0xD800 && code < 0xDC00 && r->end - r->at >= 6 && r->at[0] == '\\' && r->at[1] == 'u') {
                uint32_t low;
                r->at += 2;
                if (!hex4(r, &low)) {
                    free(b.data);
                    return false;
                }
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
            }
            put_utf8(&b, code);
            continue;
        }
        default:
            free(b.data);
            return failed(r, "bad escape in string");
        }
        json_buffer_append(&b, plain, 1);
    }
    if (r->at >= r->end) {
        free(b.data);
        return failed(r, "unterminated string");
    }
    r->at++; /* the closing quote */
    json_buffer_append(&b, "", 1);
    *out = b.data;
    *length = b.length - 1;
    return true;
}

static bool read_value(reader *r, json_value *out);

static bool read_container(reader *r, json_value *out, bool object) {
    char close = object ? '}' : ']';
    out->type = object ? JSON_OBJECT : JSON_ARRAY;
    if (++r->depth > MAX_DEPTH) {
        return failed(r, "nested too deeply");
    }
    r->at++;
    skip_space(r);
    if (r->at < r->end && *r->at == close) {
        r->at++;
        r->depth--;
        return true;
    }
    for (;;) {
        char *key = NULL;
        size_t key_length;
        skip_space(r);
        if (object) {
            if (r->at >= r->end || *r->at != '"') {
                return failed(r, "expected a string key");
            }
            if (!read_string(r, &key, &key_length)) {
                return false;
            }
            skip_space(r);
            if (r->at >= r->end || *r->at != ':') {
                free(key);
                return failed(r, "expected ':'");
            }
            r->at++;
        }
        out->items = grow(out->items, out->length, sizeof(json_value));
        memset(&out->items[out->length], 0, sizeof(json_value));
        if (object) {
            out->keys = grow(out->keys, out->length, sizeof(char *));
            out->keys[out->length] = key;
        }
        out->length++;
        if (!read_value(r, &out->items[out->length - 1])) {
            return false;
        }
        skip_space(r);
        if (r->at < r->end && *r->at == ',') {
            r->at++;
            continue;
        }
        if (r->at < r->end && *r->at == close) {
            r->at++;
            r->depth--;
            return true;
        }
        return failed(r, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static bool read_number(reader *r, json_value *out) {
    const char *start = r->at;
    if (r->at < r->end && *r->at == '-') {
        r->at++;
    }
    if (r->at >= r->end || *r->at < '0' || *r->at > '9') {
        return failed(r, "unexpected token");
    }
    while (r->at < r->end && strchr("0123456789.eE+-", *r->at)) {
        r->at++;
    }
    char digits[64];
    size_t n = (size_t)(r->at - start);
    if (n >= sizeof digits) {
        return failed(r, "number too long");
    }
    memcpy(digits, start, n);
    digits[n] = '\0';
    char *end;
    out->type = JSON_NUMBER;
    out->number = strtod(digits, &end);
    return *end == '\0' || failed(r, "malformed number");
}

static bool read_value(reader *r, json_value *out) {
    skip_space(r);
    if (r->at >= r->end) {
        return failed(r, "unexpected end of input");
    }
    switch (*r->at) {
    case '{': return read_container(r, out, true);
    case '[': return read_container(r, out, false);
    case '"':
        out->type = JSON_STRING;
        return read_string(r, &out->string, &out->length);
    case 't':
        out->type = JSON_BOOL;
        out->boolean = true;
        return literal(r, "true");
    case 'f':
        out->type = JSON_BOOL;
        return literal(r, "false");
    case 'n':
        out->type = JSON_NULL;
        return literal(r, "null");
    default:
        return read_number(r, out);
    }
}

bool json_parse(const char *text, size_t length, json_value *out, char *error, size_t error_size) {
    reader r = {text, text + length, error, error_size, 0};
    memset(out, 0, sizeof *out);
    if (!read_value(&r, out)) {
        return false;
    }
    skip_space(&r);
    return r.at == r.end || failed(&r, "trailing characters");
}

void json_free(json_value *value) {
    for (size_t i = 0; (value->type == JSON_ARRAY || value->type == JSON_OBJECT) && i < value->length; i++) {
        json_free(&value->items[i]);
        if (value->keys) {
            free(value->keys[i]);
        }
    }
    free(value->items);
    free(value->keys);
    free(value->string);
    memset(value, 0, sizeof *value);
}

const json_value *json_get(const json_value *object, const char *key) {
    if (object->type != JSON_OBJECT) {
        return NULL;
    }
    for (size_t i = 0; i < object->length; i++) {
        if (strcmp(object->keys[i], key) == 0) {
            return &object->items[i];
        }
    }
    return NULL;
}

void json_buffer_append(json_buffer *buffer, const char *bytes, size_t length) {
    if (buffer->length + length > buffer->capacity) {
        size_t capacity = buffer->capacity ? buffer->capacity * 2 : 64;
        while (capacity < buffer->length + length) {
            capacity *= 2;
        }
        buffer->data = realloc(buffer->data, capacity);
        if (!buffer->data) {
            abort();
        }
        buffer->capacity = capacity;
    }
    memcpy(buffer->data + buffer->length, bytes, length);
    buffer->length += length;
}

void json_buffer_string(json_buffer *buffer, const char *string, size_t length) {
    json_buffer_append(buffer, "\"", 1);
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)string[i];
        char escaped[8];
        if (c == '"' || c == '\\') {
            escaped[0] = '\\';
            escaped[1] = (char)c;
            json_buffer_append(buffer, escaped, 2);
        } else if (c < 0x20) {
            snprintf(escaped, sizeof escaped, "\\u%04x", c);
            json_buffer_append(buffer, escaped, 6);
        } else {
            json_buffer_append(buffer, (const char *)&c, 1);
        }
    }
    json_buffer_append(buffer, "\"", 1);
}
