// The flowhost task helper for C++23 (wit-bindgen cpp), contract flowhost:task@0.2.0.
//
// Define the task once and write plain functions; the helper does the contract's chores:
//
//     #include "flowhost_task.hpp"
//     using flowhost::Json;
//
//     static flowhost::Result<Json> execute(const Json& args, const Json& config) {
//         const double* size = args.get("size") ? args.get("size")->number() : nullptr;
//         if (!size || *size < 1) return flowhost::fail("invalid-size", "size must be at least 1");
//         flowhost::progress(0.5, Json::Object{{"step", "reserving"}});
//         flowhost::log(flowhost::Level::kInfo, "reserving", {{"size", std::to_string(*size)}});
//         return Json::Object{{"id", "vol-1"}, {"size", *size}};   // any JSON value
//     }
//
//     flowhost::Task flowhost::define() {
//         return {.name = "reserve", .version = "1.0.0", .requires_ = {"size"},
//                 .provides = {"volume"}, .execute = execute};
//     }
//
// - Arguments and config that are not JSON objects, and a missing required name, fail with
//   `invalid-args` / `invalid-config` before your function runs; the types of the values are
//   the task's to check (Json's accessors return nullptr for another type).
// - Return flowhost::fail(code, message, details) to fail the call with that task-error.
// - `revert` (optional) gets the same input, its own Outcome and the flow's failures, and
//   may return what was undone; after input that does not parse, execute failed right
//   there, so the helper answers that nothing was undone.
// - Built with -fno-exceptions: there is nothing to throw; a crash (abort, a trap) is the
//   host's to report.
#pragma once

#include <cstdint>
#include <expected>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace flowhost {

// A JSON value: null, true/false, a number, a string, an array or an object (its members in
// the order written).
class Json {
  public:
    using Array = std::vector<Json>;
    using Object = std::vector<std::pair<std::string, Json>>;

    Json() : value_(nullptr) {}
    Json(std::nullptr_t) : value_(nullptr) {}
    Json(bool b) : value_(b) {}
    Json(double n) : value_(n) {}
    Json(int n) : value_(double(n)) {}
    Json(std::size_t n) : value_(double(n)) {}
    Json(const char* s) : value_(std::string(s)) {}
    Json(std::string_view s) : value_(std::string(s)) {}
    Json(std::string s) : value_(std::move(s)) {}
    Json(Array a) : value_(std::move(a)) {}
    Json(Object o) : value_(std::move(o)) {}

    // Parses JSON text; the error says what is wrong and where.
    static std::expected<Json, std::string> parse(std::string_view text);
    // The value as compact JSON text.
    std::string dump() const;

    bool is_null() const { return std::holds_alternative<std::nullptr_t>(value_); }
    const bool* boolean() const { return std::get_if<bool>(&value_); }
    const double* number() const { return std::get_if<double>(&value_); }
    const std::string* string() const { return std::get_if<std::string>(&value_); }
    const Array* array() const { return std::get_if<Array>(&value_); }
    const Object* object() const { return std::get_if<Object>(&value_); }
    // The member `key` of an object; nullptr when absent or not an object.
    const Json* get(std::string_view key) const;

  private:
    std::variant<std::nullptr_t, bool, double, std::string, Array, Object> value_;
    void dump_to(std::string& out) const;
};

// A task's own failure: a kebab-case code, a sentence for the operator, optional details.
struct TaskError {
    std::string code;
    std::string message;
    std::optional<Json> details;
};

// What execute and revert return: a value, or the task-error that fails the call.
template <class T>
using Result = std::expected<T, TaskError>;

// The return value that fails a call with `code`: `return flowhost::fail(...);`.
inline std::unexpected<TaskError> fail(std::string code, std::string message,
                                       std::optional<Json> details = std::nullopt) {
    return std::unexpected(TaskError{std::move(code), std::move(message), std::move(details)});
}

// How the task's own execute ended, handed to revert: its result, or the error it failed
// with (or was stopped with by the host).
struct Outcome {
    std::optional<Json> result;
    std::optional<TaskError> error;
};

// One failure of the flow that triggered a revert.
struct Failure {
    std::string task;
    TaskError error;
};

// The task: names, version, data dependencies and its functions.
struct Task {
    std::string name;
    std::string version;
    std::string description;
    std::vector<std::string> requires_;
    std::vector<std::string> optional;
    std::vector<std::string> provides;
    std::function<Result<Json>(const Json& args, const Json& config)> execute;
    std::function<Result<std::optional<Json>>(const Json& args, const Json& config, const Outcome& outcome,
                                              const std::vector<Failure>& failures)>
        revert;
};

// The component's task: define it once, in the task's source file.
Task define();

// Who is calling: for idempotency keys and logs that name the run.
struct Call {
    std::string run_id;
    std::string task;
    uint32_t attempt;
};

// The current call: its run id, the task entry's name and the attempt.
Call invocation();

// Reports how far the call has come (0.0 to 1.0), with optional details.
void progress(float fraction, std::optional<Json> details = std::nullopt);

// A log record's severity.
enum class Level : uint8_t { kTrace, kDebug, kInfo, kWarn, kError };

// Writes a structured log record: log(Level::kInfo, "reserved", {{"volume", id}}).
void log(Level level, std::string_view message,
         std::initializer_list<std::pair<std::string_view, std::string_view>> fields = {});

}  // namespace flowhost
