//! The generated WIT bindings and the conversions between their types and the contract's.

use crate::contract::TaskError;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        exports: { default: async },
    });
}

pub(crate) use bindings::exports::flowhost::task::task as wit;

pub(crate) fn from_wit(error: wit::TaskError) -> TaskError {
    let details = error
        .details
        .map(|d| serde_json::from_str(&d).unwrap_or(serde_json::Value::String(d)));
    TaskError {
        code: error.code,
        message: error.message,
        details,
    }
}

pub(crate) fn to_wit(error: &TaskError) -> wit::TaskError {
    wit::TaskError {
        code: error.code.clone(),
        message: error.message.clone(),
        details: error.details.as_ref().map(ToString::to_string),
    }
}
