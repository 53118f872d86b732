//! Webhook `matchConditions`: CEL expressions over `request`, `object` and `oldObject`, with the
//! API server's semantics (k8s.io/apiserver `webhook/matchconditions`): if any condition is
//! false the webhook is skipped; otherwise, if any failed to evaluate, `failurePolicy` decides
//! (Fail: the request is refused with the errors, Ignore: the webhook is skipped); when all are
//! true the webhook is called.
//!
//! Expressions are compiled once per source text and kept. Differences from the API server:
//! expressions are parsed but not type-checked when a configuration is stored (an undeclared
//! variable or a non-bool result shows up as an evaluation error), there is no cost budget, and
//! the `authorizer` variable is not simulated (an expression using it fails to evaluate, with
//! a message saying so).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cel::{Context, ExecutionError, Program, Value as Cel};
use serde_json::Value;

/// Why an expression using `authorizer` fails here.
pub const AUTHORIZER_NOT_SIMULATED: &str = "the authorizer variable is not simulated by kube-sim; matchConditions may use request, object and oldObject";

/// A compiled expression, or why it does not compile (the API server's wording).
pub type Compiled = Result<Program, String>;

/// Compiled expressions by source text, so each is parsed once.
#[derive(Default)]
pub struct Programs {
    cache: Mutex<HashMap<String, Arc<Compiled>>>,
}

impl Programs {
    /// The compiled `expression`, compiling it on first use.
    pub fn get(&self, expression: &str) -> Arc<Compiled> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(expression.to_owned())
            .or_insert_with(|| Arc::new(compile(expression)))
            .clone()
    }
}

/// Compiles one expression; the error reads as the API server's (`compilation failed: ...`).
pub fn compile(expression: &str) -> Compiled {
    Program::compile(expression).map_err(|e| format!("compilation failed: {e}"))
}

/// Checks every `matchConditions[].expression` of webhook number `index` compiles, as the API
/// server does when the configuration is stored; the error names the field, e.g.
/// `webhooks[0].matchConditions[1].expression: Invalid value: "...": compilation failed: ...`.
pub fn validate(webhook: &Value, index: usize) -> Result<(), String> {
    let conditions = webhook.get("matchConditions").and_then(Value::as_array);
    for (j, condition) in conditions.into_iter().flatten().enumerate() {
        let expression = condition
            .get("expression")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let field = format!("webhooks[{index}].matchConditions[{j}].expression");
        if expression.trim().is_empty() {
            return Err(format!("{field}: Required value"));
        }
        if let Err(e) = compile(expression) {
            return Err(format!("{field}: Invalid value: {expression:?}: {e}"));
        }
    }
    Ok(())
}

/// What a webhook's conditions decide for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every condition is true (or there are none): call the webhook.
    Call,
    /// A condition is false (named), or one failed under `failurePolicy: Ignore` (`None`).
    Skip(Option<String>),
    /// A condition failed under `failurePolicy: Fail`: refuse the request with this error.
    Refuse(String),
}

/// The variables the expressions see: the admission request (without its objects and uid, as
/// the API server builds it for CEL), the object and the old object (`null` when absent).
pub struct Inputs {
    request: Cel,
    object: Cel,
    old_object: Cel,
}

impl Inputs {
    pub fn new(request: &Value, object: Option<&Value>, old_object: Option<&Value>) -> Self {
        let mut request = request.clone();
        if let Some(r) = request.as_object_mut() {
            for field in ["uid", "object", "oldObject"] {
                r.remove(field);
            }
            // omitempty in the API's AdmissionRequest: an empty name or namespace is absent.
            for field in ["name", "namespace"] {
                if r.get(field).and_then(Value::as_str) == Some("") {
                    r.remove(field);
                }
            }
        }
        Self {
            request: to_cel(&request),
            object: object.map_or(Cel::Null, to_cel),
            old_object: old_object.map_or(Cel::Null, to_cel),
        }
    }
}

/// JSON as CEL sees a Kubernetes object: integers are `int`, other numbers `double`.
fn to_cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cel::Int(i),
            (None, Some(u)) => Cel::UInt(u),
            _ => Cel::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| (k.clone(), to_cel(v)))
            .collect::<HashMap<String, Cel>>()
            .into(),
    }
}

/// cel-go's wording of the evaluation errors Kubernetes users see most.
fn go_text(e: &ExecutionError) -> String {
    match e {
        ExecutionError::NoSuchKey(k) => format!("no such key: {k}"),
        ExecutionError::UndeclaredReference(name) => format!("undeclared reference to '{name}'"),
        ExecutionError::NoSuchOverload(_) => "no such overload".to_owned(),
        other => other.to_string(),
    }
}

/// Evaluates one compiled expression against `ctx`; errors read as the API server's
/// (`expression '...' resulted in error: ...`).
fn evaluate(compiled: &Compiled, expression: &str, ctx: &Context<'_, '_>) -> Result<bool, String> {
    let failed = |why: &str| format!("expression '{expression}' resulted in error: {why}");
    let program = compiled.as_ref().map_err(|e| e.clone())?;
    if program.references().has_variable("authorizer") {
        return Err(failed(AUTHORIZER_NOT_SIMULATED));
    }
    match program.execute(ctx) {
        Ok(Cel::Bool(b)) => Ok(b),
        Ok(other) => Err(failed(&format!("expected a bool, got {}", other.type_of()))),
        Err(e) => Err(failed(&go_text(&e))),
    }
}

/// The API server's decision from each condition's outcome, in order (pure).
pub fn decide(outcomes: Vec<(String, Result<bool, String>)>, fail_open: bool) -> Verdict {
    let mut errors: Vec<String> = Vec::new();
    for (name, outcome) in outcomes {
        match outcome {
            Ok(false) => return Verdict::Skip(Some(name)),
            Ok(true) => {}
            Err(e) => {
                if !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
    }
    match errors.len() {
        0 => Verdict::Call,
        _ if fail_open => Verdict::Skip(None),
        // utilerrors.NewAggregate: one error as itself, several in brackets.
        1 => Verdict::Refuse(errors.remove(0)),
        _ => Verdict::Refuse(format!("[{}]", errors.join(", "))),
    }
}

/// Evaluates `webhook`'s matchConditions for a request.
pub fn check(programs: &Programs, webhook: &Value, inputs: &Inputs) -> Verdict {
    let Some(conditions) = webhook
        .get("matchConditions")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    else {
        return Verdict::Call;
    };
    let mut ctx = Context::default();
    ctx.add_variable_from_value("request", inputs.request.clone());
    ctx.add_variable_from_value("object", inputs.object.clone());
    ctx.add_variable_from_value("oldObject", inputs.old_object.clone());
    let outcomes = conditions
        .iter()
        .map(|c| {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            let expression = c
                .get("expression")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let compiled = programs.get(expression);
            (name.to_owned(), evaluate(&compiled, expression, &ctx))
        })
        .collect();
    let fail_open = webhook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore");
    decide(outcomes, fail_open)
}

#[cfg(test)]
mod tests;
