//! The numeric CSV tables the pictures read (`metrics.csv`, robustness curves and baselines):
//! header names and rows of numbers, read with the `csv` crate.

use anyhow::{Context, Result, bail};

/// A numeric CSV: the header's names, and every row with the line it starts on.
pub struct Table {
    /// Column names, trimmed.
    pub names: Vec<String>,
    /// `(line, values)` of every row, as many values as names.
    pub rows: Vec<(usize, Vec<f64>)>,
}

impl Table {
    /// Parses CSV text whose header names the columns and whose every field is a number.
    pub fn parse(text: &str) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(text.as_bytes());
        let names: Vec<String> = reader.headers().context("reading the header")?.iter().map(str::to_string).collect();
        if names.iter().all(String::is_empty) {
            bail!("the file is empty (no header)");
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.context("reading a row")?;
            let line = record.position().map_or(0, |p| p.line() as usize);
            if record.len() != names.len() {
                bail!("line {line}: {} fields, the header has {}", record.len(), names.len());
            }
            let row = record
                .iter()
                .map(|f| f.parse::<f64>().with_context(|| format!("line {line}: '{f}' is not a number")))
                .collect::<Result<Vec<f64>>>()?;
            rows.push((line, row));
        }
        if rows.is_empty() {
            bail!("no rows after the header: nothing to plot");
        }
        Ok(Self { names, rows })
    }

    /// Position of column `name`.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.names.iter().position(|n| n == name).with_context(|| format!("the header has no column '{name}'"))
    }

    /// The values of column `name`, row by row.
    pub fn values(&self, name: &str) -> Result<Vec<f64>> {
        let c = self.column(name)?;
        Ok(self.rows.iter().map(|(_, r)| r[c]).collect())
    }
}
