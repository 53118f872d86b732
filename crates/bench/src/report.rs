//! Markdown tables and how they go into BENCHMARKS.md (pure): each area owns a section between
//! `<!-- bench:AREA:begin -->` and `<!-- bench:AREA:end -->`; a run replaces its areas' sections
//! and keeps everything else (the image sizes, areas not run this time).

/// A markdown table.
#[derive(Clone, Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = line(&self.header);
        out.push_str(&format!("|{}\n", "---|".repeat(self.header.len())));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// One area's section: a heading, prose and tables in order.
#[derive(Clone, Debug, Default)]
pub struct Section {
    pub area: String,
    pub body: String,
}

impl Section {
    pub fn new(area: &str, title: &str) -> Self {
        Section {
            area: area.to_owned(),
            body: format!("## {title}\n\n"),
        }
    }

    pub fn para(&mut self, text: &str) {
        self.body.push_str(text.trim_end());
        self.body.push_str("\n\n");
    }

    pub fn table(&mut self, t: &Table) {
        self.body.push_str(&t.render());
        self.body.push('\n');
    }
}

fn markers(area: &str) -> (String, String) {
    (
        format!("<!-- bench:{area}:begin -->"),
        format!("<!-- bench:{area}:end -->"),
    )
}

/// `doc` with `section` in place of its previous version, or appended when it had none.
pub fn merge(doc: &str, section: &Section) -> String {
    let (begin, end) = markers(&section.area);
    let block = format!(
        "{begin}\n{}{end}\n",
        section.body.trim_end().to_owned() + "\n"
    );
    if let (Some(b), Some(e)) = (doc.find(&begin), doc.find(&end))
        && b < e
    {
        let after = &doc[e + end.len()..];
        let after = after.strip_prefix('\n').unwrap_or(after);
        return format!("{}{block}{after}", &doc[..b]);
    }
    let mut out = doc.trim_end().to_owned();
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(&block);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(area: &str, text: &str) -> Section {
        let mut s = Section::new(area, "Title");
        s.para(text);
        s
    }

    #[test]
    fn tables_render_as_markdown() {
        let mut t = Table::new(["a", "b"]);
        t.row(["1", "2"]);
        assert_eq!(t.render(), "| a | b |\n|---|---|\n| 1 | 2 |\n");
    }

    #[test]
    fn a_new_area_is_appended_and_the_rest_kept() {
        let doc = "# Benchmarks\n\n## Service images\n\n| x |\n";
        let out = merge(doc, &section("memory", "rss"));
        assert!(out.starts_with(doc.trim_end()), "{out}");
        assert!(out.ends_with(
            "<!-- bench:memory:begin -->\n## Title\n\nrss\n<!-- bench:memory:end -->\n"
        ));
    }

    #[test]
    fn a_rerun_replaces_only_its_own_area() {
        let doc = merge("# B\n", &section("admission", "old admission"));
        let doc = merge(&doc, &section("memory", "old memory"));
        let doc = merge(&doc, &section("admission", "new admission"));
        assert!(doc.contains("new admission"));
        assert!(!doc.contains("old admission"));
        assert!(doc.contains("old memory"));
        assert!(doc.find("new admission") < doc.find("old memory"), "{doc}");
        assert_eq!(doc.matches("bench:admission:begin").count(), 1);
    }
}
