//! The narrator: writes the tour to the output it was given, one step at a time, and keeps
//! the user informed while it waits.

use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often a wait checks its condition again: the simulator reacts within ~100ms.
const POLL: Duration = Duration::from_millis(100);

pub struct Narrator<'a> {
    out: &'a mut (dyn Write + Send),
    steps: usize,
    started: Instant,
    step_started: Instant,
    /// The longest any single wait may take.
    pub timeout: Duration,
}

impl<'a> Narrator<'a> {
    pub fn new(out: &'a mut (dyn Write + Send), steps: usize, timeout: Duration) -> Self {
        Narrator {
            out,
            steps,
            started: Instant::now(),
            step_started: Instant::now(),
            timeout,
        }
    }

    fn write(&mut self, text: &str) -> Result<()> {
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(Error::Write)
    }

    /// A line at the left margin.
    pub fn line(&mut self, text: &str) -> Result<()> {
        self.write(&format!("{text}\n"))
    }

    /// A title for a part of the tour that is not a numbered step.
    pub fn section(&mut self, title: &str) -> Result<()> {
        self.write(&format!("\n=== {title} ===\n"))
    }

    /// Opens step `n`: its title, what it shows and what it proves. Printed before the step runs.
    pub fn step(&mut self, n: usize, title: &str, shows: &str, proves: &str) -> Result<()> {
        self.step_started = Instant::now();
        let steps = self.steps;
        self.write(&format!(
            "\n=== Step {n}/{steps}: {title} ===\nShows:  {shows}\nProves: {proves}\n\n"
        ))
    }

    /// Closes the current step with its duration.
    pub fn step_done(&mut self) -> Result<()> {
        let took = self.step_started.elapsed();
        self.write(&format!("  (step took {:.1}s)\n", took.as_secs_f64()))
    }

    /// An indented sentence of the narration.
    pub fn say(&mut self, text: &str) -> Result<()> {
        self.write(&format!("  {text}\n"))
    }

    /// A command line the user could type, then its output indented below it.
    pub fn command(&mut self, command: &str) -> Result<()> {
        self.write(&format!("  $ {command}\n"))
    }

    /// Verbatim output (a table, JSON), indented under the narration.
    pub fn block(&mut self, text: &str) -> Result<()> {
        let text = crate::format::indent(text.trim_end(), 4);
        self.write(&format!("{text}\n"))
    }

    /// Time since the tour started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Says what it waits for, polls `check` until it returns `Some`, and says how long it took;
    /// fails naming `what` after [`Narrator::timeout`].
    pub async fn wait_for<T, F, Fut>(&mut self, what: &str, mut check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let timeout = self.timeout;
        self.write(&format!(
            "  ... waiting for {what} (up to {}s) ",
            timeout.as_secs()
        ))?;
        let start = Instant::now();
        loop {
            if let Some(v) = check().await {
                self.write(&format!("ok, {:.1}s\n", start.elapsed().as_secs_f64()))?;
                return Ok(v);
            }
            if start.elapsed() >= timeout {
                self.write("TIMED OUT\n")?;
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_says_what_it_waits_for_and_fails_with_that_name() {
        let mut buf = Vec::new();
        let result: Result<()> = {
            let mut n = Narrator::new(&mut buf, 6, Duration::from_millis(250));
            n.wait_for("the moon to turn blue", || async { None }).await
        };
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.starts_with("  ... waiting for the moon to turn blue (up to 0s) TIMED OUT\n"),
            "{text}"
        );
        let err = result.expect_err("times out");
        assert!(
            err.to_string()
                .starts_with("timed out after 250ms waiting for the moon to turn blue"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_step_header_names_its_number_purpose_and_proof_before_it_runs() {
        let mut buf = Vec::new();
        {
            let mut n = Narrator::new(&mut buf, 6, Duration::from_secs(1));
            n.step(2, "Inspect", "a table", "it works").unwrap();
            let v = n.wait_for("a value", || async { Some(7) }).await.unwrap();
            assert_eq!(v, 7);
        }
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.starts_with("\n=== Step 2/6: Inspect ===\nShows:  a table\nProves: it works\n\n"),
            "{text}"
        );
        assert!(
            text.contains("  ... waiting for a value (up to 1s) ok, 0.0s\n"),
            "{text}"
        );
    }
}
