//! The label selector grammar of k8s.io/apimachinery `labels.Parse`: the same tokens, the same
//! recursive descent and the same error messages, so a selector a real API server refuses is
//! refused here with its words (`=b`, `!a=b`, `a in x`), and one it accepts means the same
//! (`a in ()` is `a in ("")`).

use super::{ParseError, Req};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Error,
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

/// The operators a requirement may have after its key, as `labels.Parse` lists them.
const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

fn keyword(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// The tokens of a selector, ending with [`Token::End`].
fn lex(s: &str) -> Vec<(Token, String)> {
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() {
            out.push((Token::End, String::new()));
            return out;
        }
        let start = pos;
        if is_special(bytes[pos]) {
            // The longest run of symbols that is still an operator ("!=" but "=(" is "=").
            let mut last: Option<(Token, usize)> = None;
            while pos < bytes.len() && is_special(bytes[pos]) {
                pos += 1;
                match keyword(&s[start..pos]) {
                    Some(t) => last = Some((t, pos)),
                    None if last.is_some() => {
                        pos -= 1;
                        break;
                    }
                    None => {}
                }
            }
            match last {
                Some((t, end)) => {
                    pos = end;
                    out.push((t, s[start..end].to_string()));
                }
                None => out.push((
                    Token::Error,
                    format!("error expected: keyword found '{}'", &s[start..pos]),
                )),
            }
        } else {
            while pos < bytes.len() && !is_special(bytes[pos]) && !is_whitespace(bytes[pos]) {
                pos += 1;
            }
            let word = &s[start..pos];
            let t = match keyword(word) {
                Some(t @ (Token::In | Token::NotIn)) => t,
                _ => Token::Identifier,
            };
            out.push((t, word.to_string()));
        }
    }
}

/// Where a token is read: after a key, `in`/`notin` are operators; elsewhere they are values.
#[derive(Clone, Copy, PartialEq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    pos: usize,
}

impl Parser {
    fn lookahead(&self, ctx: Context) -> (Token, String) {
        let (t, lit) = self
            .items
            .get(self.pos)
            .cloned()
            .unwrap_or((Token::End, String::new()));
        let t = match t {
            Token::In | Token::NotIn if ctx == Context::Values => Token::Identifier,
            t => t,
        };
        (t, lit)
    }

    fn consume(&mut self, ctx: Context) -> (Token, String) {
        let item = self.lookahead(ctx);
        self.pos = (self.pos + 1).min(self.items.len());
        item
    }

    fn parse(&mut self) -> Result<Vec<Req>, String> {
        let mut reqs = Vec::new();
        loop {
            let (t, lit) = self.lookahead(Context::Values);
            match t {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, lit) = self.consume(Context::Values);
                    match t {
                        Token::End => return Ok(reqs),
                        Token::Comma => {
                            let (t2, lit2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{lit2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!("found '{lit}', expected: ',' or 'end of string'"));
                        }
                    }
                }
                Token::End => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Req, String> {
        let (mut t, mut key) = self.consume(Context::Values);
        let negated = t == Token::DoesNotExist;
        if negated {
            (t, key) = self.consume(Context::Values);
        }
        if t != Token::Identifier {
            return Err(format!("found '{key}', expected: identifier"));
        }
        let (next, _) = self.lookahead(Context::Values);
        if negated {
            return Ok(Req::NotExists(key));
        }
        if next == Token::End || next == Token::Comma {
            return Ok(Req::Exists(key));
        }
        let (op, lit) = self.consume(Context::KeyAndOperator);
        match op {
            Token::In => Ok(Req::In(key, self.values()?)),
            Token::NotIn => Ok(Req::NotIn(key, self.values()?)),
            Token::Equals | Token::DoubleEquals => Ok(Req::Eq(key, self.exact_value()?)),
            Token::NotEquals => Ok(Req::NotEq(key, self.exact_value()?)),
            Token::GreaterThan | Token::LessThan => {
                let v = self.exact_value()?;
                let n: i64 = v.parse().map_err(|_| {
                    format!(
                        "values[0]: Invalid value: \"{v}\": for 'Gt', 'Lt' operators, the value must be an integer"
                    )
                })?;
                Ok(if op == Token::GreaterThan {
                    Req::Gt(key, n)
                } else {
                    Req::Lt(key, n)
                })
            }
            _ => Err(format!("found '{lit}', expected: {BINARY_OPERATORS}")),
        }
    }

    /// `( v1, v2, ... )`: empty entries are the empty value, `()` is `("")`.
    fn values(&mut self) -> Result<Vec<String>, String> {
        let (t, lit) = self.consume(Context::Values);
        if t != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (t, lit) = self.lookahead(Context::Values);
        match t {
            Token::Identifier | Token::Comma => {
                let values = self.identifiers()?;
                let (t, _) = self.consume(Context::Values);
                if t != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn identifiers(&mut self) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::new();
        let insert = |out: &mut Vec<String>, v: String| {
            if !out.contains(&v) {
                out.push(v);
            }
        };
        loop {
            let (t, lit) = self.consume(Context::Values);
            match t {
                Token::Identifier => {
                    insert(&mut out, lit);
                    let (t2, lit2) = self.lookahead(Context::Values);
                    match t2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(out),
                        _ => return Err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if out.is_empty() {
                        insert(&mut out, String::new());
                    }
                    let (t2, _) = self.lookahead(Context::Values);
                    if t2 == Token::ClosedPar {
                        insert(&mut out, String::new());
                        return Ok(out);
                    }
                    if t2 == Token::Comma {
                        self.consume(Context::Values);
                        insert(&mut out, String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; nothing is the empty value.
    fn exact_value(&mut self) -> Result<String, String> {
        let (t, _) = self.lookahead(Context::Values);
        if t == Token::End || t == Token::Comma {
            return Ok(String::new());
        }
        let (t, lit) = self.consume(Context::Values);
        if t == Token::Identifier {
            Ok(lit)
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

/// Parses a label selector as `labels.Parse` does.
pub(super) fn parse(s: &str) -> Result<Vec<Req>, ParseError> {
    let mut p = Parser {
        items: lex(s),
        pos: 0,
    };
    p.parse().map_err(ParseError)
}
