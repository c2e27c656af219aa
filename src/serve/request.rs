//! Reading a `/predict` body. The shape is text-embeddings-inference's, so a client can switch
//! between the two: `inputs` is a text (`"t"`), a pair (`["a", "b"]`, or `["t"]` for one text)
//! or a batch of such sequences (`[["t1"], ["a", "b"]]`); `truncate` and `raw_scores` are
//! optional booleans. Every refusal names the field at fault (`inputs[2][0]`).
use super::error::ApiError;
use super::Limits;
use serde_json::{Map, Value};

/// A checked `/predict` request.
#[derive(Debug)]
pub struct PredictRequest {
    pub inputs: Vec<Input>,
    /// Whether `inputs` was a batch (the answer is then a list per input).
    pub batch: bool,
    /// `false`: refuse a text longer than the model reads instead of cutting it. Absent: cut
    /// it, as kd predict does (TEI's `--auto-truncate`).
    pub truncate: Option<bool>,
    /// Logits instead of probabilities.
    pub raw_scores: bool,
}

/// One sequence to classify: a text, or a pair.
#[derive(Debug)]
pub struct Input {
    pub text: String,
    pub pair: Option<String>,
    /// Where it was in the body, to name it in a refusal.
    pub field: String,
}

const INPUTS_SHAPE: &str = "`inputs` must be a text \"...\", a pair [\"...\", \"...\"] or a batch [[\"...\"], [\"...\", \"...\"], ...]";

/// Parses and checks a body against the server's limits.
pub fn parse(body: &[u8], limits: &Limits) -> Result<PredictRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_body(format!("the body is not JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::invalid(
            "the body must be a JSON object: {\"inputs\": \"a text\"}",
        ));
    };
    let inputs = fields
        .remove("inputs")
        .ok_or_else(|| ApiError::invalid("`inputs` is missing: send {\"inputs\": \"a text\"}"))?;
    let (inputs, batch) = read_inputs(inputs, limits)?;
    check_direction(&fields)?;
    Ok(PredictRequest {
        inputs,
        batch,
        truncate: flag(&fields, "truncate")?,
        raw_scores: flag(&fields, "raw_scores")?.unwrap_or(false),
    })
}

/// TEI's reading: a string is one text; a list whose first item is a string is one sequence;
/// a list whose first item is a list is a batch.
fn read_inputs(inputs: Value, limits: &Limits) -> Result<(Vec<Input>, bool), ApiError> {
    let items = match inputs {
        Value::String(text) => return Ok((vec![single(text, "inputs", limits)?], false)),
        Value::Array(items) => items,
        _ => return Err(ApiError::invalid(INPUTS_SHAPE)),
    };
    match items.first() {
        None => Err(ApiError::invalid(
            "`inputs` is an empty list: send a text, a pair or a batch",
        )),
        Some(Value::String(_)) => Ok((vec![sequence(items, "inputs", limits)?], false)),
        Some(Value::Array(_)) => Ok((batch(items, limits)?, true)),
        Some(_) => Err(ApiError::invalid(INPUTS_SHAPE)),
    }
}

/// A batch of sequences, no more than `--max-client-batch-size` of them.
fn batch(items: Vec<Value>, limits: &Limits) -> Result<Vec<Input>, ApiError> {
    if items.len() > limits.max_client_batch_size {
        return Err(ApiError::too_large(format!(
            "`inputs` holds a batch of {} sequences, over the limit of {} (--max-client-batch-size): split it",
            items.len(),
            limits.max_client_batch_size
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let field = format!("inputs[{i}]");
            match item {
                Value::Array(parts) => sequence(parts, &field, limits),
                _ => Err(ApiError::invalid(format!(
                    "`{field}` must be [\"...\"] or [\"...\", \"...\"]: every item of a batch is a list"
                ))),
            }
        })
        .collect()
}

/// `[text]` or `[text, pair]`.
fn sequence(parts: Vec<Value>, field: &str, limits: &Limits) -> Result<Input, ApiError> {
    if !(1..=2).contains(&parts.len()) {
        return Err(ApiError::invalid(format!(
            "`{field}` holds {} items: a sequence is one text or a pair of two",
            parts.len()
        )));
    }
    let mut texts = Vec::with_capacity(2);
    for (j, part) in parts.into_iter().enumerate() {
        let name = format!("{field}[{j}]");
        match part {
            Value::String(text) => texts.push(checked(text, &name, limits)?),
            _ => return Err(ApiError::invalid(format!("`{name}` must be a string"))),
        }
    }
    let mut texts = texts.into_iter();
    Ok(Input {
        text: texts.next().unwrap_or_default(),
        pair: texts.next(),
        field: field.to_string(),
    })
}

fn single(text: String, field: &str, limits: &Limits) -> Result<Input, ApiError> {
    Ok(Input {
        text: checked(text, field, limits)?,
        pair: None,
        field: field.to_string(),
    })
}

/// A text that is neither blank nor over `--max-text-chars`.
fn checked(text: String, field: &str, limits: &Limits) -> Result<String, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid(format!(
            "`{field}` is empty: there is no text to classify"
        )));
    }
    // Counted in characters, as TEI counts them; bytes would penalise non-Latin scripts.
    let chars = text.chars().count();
    if chars > limits.max_text_chars {
        return Err(ApiError::invalid(format!(
            "`{field}` has {chars} characters, over the limit of {} (--max-text-chars)",
            limits.max_text_chars
        )));
    }
    Ok(text)
}

/// An optional boolean field (`null` counts as absent).
fn flag(fields: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::invalid(format!(
            "`{name}` must be true or false, not {other}"
        ))),
    }
}

/// TEI's `truncation_direction`: kd cuts the end of a text, as it did in training.
fn check_direction(fields: &Map<String, Value>) -> Result<(), ApiError> {
    match fields.get("truncation_direction") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("right") => Ok(()),
        Some(other) => Err(ApiError::invalid(format!(
            "`truncation_direction` {other} is not supported: kd keeps the start of a text (Right), as the model was trained"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn limits() -> Limits {
        Limits {
            payload_limit: 1 << 20,
            max_client_batch_size: 2,
            max_text_chars: 10,
        }
    }

    fn read(body: &str) -> Result<PredictRequest, ApiError> {
        parse(body.as_bytes(), &limits())
    }

    fn refusal(body: &str) -> (StatusCode, String) {
        let e = read(body).unwrap_err();
        (e.status, e.message)
    }

    #[test]
    fn reads_teis_three_shapes() {
        let one = read(r#"{"inputs": "a b"}"#).unwrap();
        assert!(!one.batch && one.inputs[0].pair.is_none() && one.truncate.is_none());
        let pair = read(r#"{"inputs": ["a", "b"], "raw_scores": true}"#).unwrap();
        assert!(!pair.batch && pair.raw_scores);
        assert_eq!(pair.inputs[0].pair.as_deref(), Some("b"));
        let batch = read(r#"{"inputs": [["a"], ["b", "c"]], "truncate": false}"#).unwrap();
        assert!(batch.batch && batch.truncate == Some(false));
        assert_eq!(batch.inputs.len(), 2);
        assert_eq!(batch.inputs[1].field, "inputs[1]");
        assert!(read(r#"{"inputs": ["a"]}"#).unwrap().inputs[0]
            .pair
            .is_none());
    }

    #[test]
    fn refusals_name_the_field() {
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        let cases = [
            (r#"{"input": "a"}"#, "`inputs` is missing"),
            (r#"{"inputs": 3}"#, "`inputs` must be"),
            (r#"{"inputs": []}"#, "empty list"),
            (r#"{"inputs": ["a", "b", "c"]}"#, "`inputs` holds 3 items"),
            (r#"{"inputs": [["a"], "b"]}"#, "`inputs[1]` must be"),
            (r#"{"inputs": [["a"], [" "]]}"#, "`inputs[1][0]` is empty"),
            (
                r#"{"inputs": [["a", 5]]}"#,
                "`inputs[0][1]` must be a string",
            ),
            (r#"{"inputs": "abcdefghijk"}"#, "11 characters"),
            (
                r#"{"inputs": "a", "raw_scores": 1}"#,
                "`raw_scores` must be",
            ),
            (
                r#"{"inputs": "a", "truncation_direction": "Left"}"#,
                "not supported",
            ),
            ("[1]", "must be a JSON object"),
        ];
        for (body, says) in cases {
            let (status, message) = refusal(body);
            assert_eq!(status, unprocessable, "{body}: {message}");
            assert!(message.contains(says), "{body}: {message}");
        }
        assert_eq!(refusal("{").0, StatusCode::BAD_REQUEST);
        let (status, message) = refusal(r#"{"inputs": [["a"], ["b"], ["c"]]}"#);
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(message.contains("--max-client-batch-size"), "{message}");
    }
}
