// The kitchen-sink task in C++: appends its stamp to a ledger.
//
// It exercises the flowhost task contract (0.2) through the helper flowhost_task.hpp:
// required and optional arguments, config, a result stored in the flow's store, error codes
// with details, log lines on stderr, structured logs, progress, the invocation and revert
// with a result. The same task exists in Rust, Python, JavaScript, C and Go (see
// plugins/README.md).
#include <cstdio>
#include <string>

#include "flowhost_task.hpp"

using flowhost::Json;

namespace {

// What execute and revert read from their input, its types checked.
struct Stamp {
    const Json::Array* ledger;
    const std::string* note;
    std::string stamp;
    bool fail;
};

flowhost::Result<Stamp> checked(const Json& args, const Json& config) {
    const Json::Array* ledger = args.get("ledger")->array();
    bool strings = ledger != nullptr;
    for (std::size_t i = 0; strings && i < ledger->size(); i++) strings = (*ledger)[i].string() != nullptr;
    if (!strings) return flowhost::fail("invalid-args", "`ledger` must be an array of strings");
    const Json* note = args.get("note");
    if (note && !note->string()) return flowhost::fail("invalid-args", "`note` must be a string");
    const Json* stamp = config.get("stamp");
    if (!stamp || !stamp->string() || stamp->string()->empty())
        return flowhost::fail("invalid-config", "config `stamp` must be a non-empty string");
    const Json* fail = config.get("fail");
    if (fail && !fail->boolean()) return flowhost::fail("invalid-config", "config `fail` must be true or false");
    return Stamp{ledger, note ? note->string() : nullptr, *stamp->string(), fail && *fail->boolean()};
}

flowhost::Result<Json> execute(const Json& args, const Json& config) {
    auto in = checked(args, config);
    if (!in) return std::unexpected(in.error());
    std::fprintf(stderr, "stamp %s (cpp): ledger of %zu entries\n", in->stamp.c_str(), in->ledger->size());
    flowhost::log(flowhost::Level::kInfo, "stamping",
                  {{"stamp", in->stamp}, {"entries", std::to_string(in->ledger->size())},
                   {"run", flowhost::invocation().run_id}});
    flowhost::progress(0.5, Json::Object{{"stamp", in->stamp}});
    if (in->fail) {
        return flowhost::fail("asked-to-fail", "config `fail` is set: failing on purpose",
                              Json::Object{{"stamp", in->stamp}});
    }
    Json::Array ledger = *in->ledger;
    ledger.push_back(in->note ? in->stamp + " (" + *in->note + ")" : in->stamp);
    return ledger;
}

flowhost::Result<std::optional<Json>> revert(const Json& args, const Json& config, const flowhost::Outcome& outcome,
                                             const std::vector<flowhost::Failure>& failures) {
    auto in = checked(args, config);
    if (!in) {
        // execute got the same input, so it failed right there: nothing to undo.
        std::fprintf(stderr, "stamp (cpp): nothing to revert: %s\n", in.error().message.c_str());
        return std::nullopt;
    }
    std::string ended = outcome.error ? "error " + outcome.error->code : "a result";
    std::string causes;
    for (const auto& f : failures) causes += (causes.empty() ? "" : ", ") + f.task + ": " + f.error.code;
    std::fprintf(stderr, "stamp %s (cpp): reverted after %s; flow failures: %s\n", in->stamp.c_str(), ended.c_str(),
                 causes.empty() ? "none" : causes.c_str());
    return Json(Json::Object{{"unstamped", in->stamp}});
}

}  // namespace

flowhost::Task flowhost::define() {
    return {
        .name = "stamp",
        .version = "1.0.0",
        .description = "Appends its stamp to a ledger (kitchen-sink task, C++)",
        .requires_ = {"ledger"},
        .optional = {"note"},
        .provides = {"stamped"},
        .execute = execute,
        .revert = revert,
    };
}
