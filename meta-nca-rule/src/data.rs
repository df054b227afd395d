//! Classification data: loading labelled numeric tables (the embedded Iris table or any
//! CSV file) into a [`Dataset`], and turning a dataset into a seeded, stratified,
//! standardised train/validation [`Split`].
//!
//! This module owns CSV reading (through the `csv` crate) and every check on the table it reads
//! (ragged rows, non-numeric or missing cells, label column lookup, class count); all of
//! its failures are [`Error::Csv`], [`Error::Dataset`] or [`Error::Io`].

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::Error;

/// The classic Fisher Iris table (150 rows, 4 features, 3 species), shipped with the crate.
const IRIS_CSV: &str = include_str!("../data/iris.csv");

/// The UCI Wine table (178 rows, 13 features, 3 cultivars), shipped with the crate.
const WINE_CSV: &str = include_str!("../data/wine.csv");

/// The UCI Breast Cancer Wisconsin (Diagnostic) table (569 rows, 30 features, malignant or
/// benign), shipped with the crate.
const BREAST_CANCER_CSV: &str = include_str!("../data/breast_cancer.csv");

/// Names of the embedded datasets, as configs and the CLI spell them.
pub const EMBEDDED: [&str; 3] = ["iris", "wine", "breast-cancer"];

/// Whether `name` is an embedded dataset (case-insensitive).
pub fn is_embedded(name: &str) -> bool {
    EMBEDDED.iter().any(|e| e.eq_ignore_ascii_case(name))
}

/// Cell spellings that mean "no value" (compared case-insensitively after trimming).
const MISSING_MARKERS: [&str; 4] = ["", "na", "nan", "?"];

/// A classification table: numeric features and integer class labels 0..num_classes.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Short name of the table (e.g. `iris`, or a file stem).
    pub name: String,
    /// Names of the feature columns, in header order (the label column excluded).
    pub feature_names: Vec<String>,
    /// Class names; label `k` in [`Dataset::y`] means `class_names[k]`.
    pub class_names: Vec<String>,
    /// Feature values, `[rows][features]`, all finite.
    pub x: Vec<Vec<f64>>,
    /// Class label of each row, in `0..class_names.len()`.
    pub y: Vec<usize>,
}

impl Dataset {
    /// The embedded Fisher Iris table: 150 rows, 4 features, classes
    /// `setosa`, `versicolor`, `virginica` (labels 0, 1, 2), 50 rows each.
    pub fn iris() -> Dataset {
        Self::embedded("iris").expect("iris is embedded")
    }

    /// An embedded dataset by name ([`EMBEDDED`], case-insensitive), or `None`.
    pub fn embedded(name: &str) -> Option<Dataset> {
        let (name, text, label) = match name.to_ascii_lowercase().as_str() {
            "iris" => ("iris", IRIS_CSV, "species"),
            "wine" => ("wine", WINE_CSV, "class"),
            "breast-cancer" => ("breast-cancer", BREAST_CANCER_CSV, "diagnosis"),
            _ => return None,
        };
        let source = format!("embedded {name}");
        Some(
            parse_csv(name, &source, text, Some(label))
                .expect("the embedded tables are well-formed (checked by unit tests)"),
        )
    }

    /// Parses a CSV table held in memory.
    ///
    /// The first non-blank record is the header; fields are comma-separated and trimmed,
    /// quoted as RFC 4180 says (a quoted field may hold commas, doubled quotes and line
    /// breaks; the `csv` crate reads them); blank lines are skipped. `label_column` names the label column by
    /// its header name; `None` means the last column. Every other column must hold
    /// finite numbers. Class names are the distinct label strings, sorted numerically
    /// when all of them are numbers and lexicographically otherwise, so label ids are
    /// deterministic. `name` names the dataset and is used as the source in errors.
    pub fn from_csv_str(name: &str, text: &str, label_column: Option<&str>) -> crate::Result<Dataset> {
        parse_csv(name, name, text, label_column)
    }

    /// Reads and parses a CSV file (same rules as [`Dataset::from_csv_str`]). The
    /// dataset is named after the file stem; errors name the path.
    pub fn from_csv_path(path: &Path, label_column: Option<&str>) -> crate::Result<Dataset> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let name =
            path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
        parse_csv(&name, &path.display().to_string(), &text, label_column)
    }

    /// Number of feature columns.
    pub fn num_features(&self) -> usize {
        self.feature_names.len()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

/// Builds an [`Error::Csv`].
fn csv_err(source_name: &str, line: usize, message: impl Into<String>) -> Error {
    Error::Csv { source_name: source_name.to_string(), line, message: message.into() }
}

/// Builds an [`Error::Dataset`].
fn dataset_err(name: &str, message: impl Into<String>) -> Error {
    Error::Dataset { name: name.to_string(), message: message.into() }
}

/// The non-blank records of a CSV text with their line numbers, fields trimmed and unquoted
/// (RFC 4180: quoted fields may hold commas, doubled quotes and line breaks), as the `csv`
/// crate reads them; records may differ in length (the caller says which is wrong).
fn records(source_name: &str, text: &str) -> crate::Result<Vec<(usize, Vec<String>)>> {
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    // The line a record starts on, counted from its byte offset (the reader's own line
    // count skips blank lines), incrementally: records come in order.
    let bytes = text.as_bytes();
    let (mut counted_to, mut newlines) = (0usize, 0usize);
    let mut line_at = |p: Option<&csv::Position>| {
        let Some(p) = p else { return 0 };
        let mut at = (p.byte() as usize).min(bytes.len()).max(counted_to);
        // A record's position can include the blank lines skipped before it.
        while at < bytes.len() && (bytes[at] == b'\n' || bytes[at] == b'\r') {
            at += 1;
        }
        newlines += bytes[counted_to..at].iter().filter(|&&b| b == b'\n').count();
        counted_to = at;
        newlines + 1
    };
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_err(source_name, line_at(e.position()), e.to_string()))?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let line = line_at(record.position());
        out.push((line, record.iter().map(str::to_string).collect()));
    }
    Ok(out)
}

/// True when `cell` spells a missing value.
fn is_missing(cell: &str) -> bool {
    MISSING_MARKERS.iter().any(|m| cell.eq_ignore_ascii_case(m))
}

/// The CSV reader behind [`Dataset::from_csv_str`] and friends; `source_name` is what
/// [`Error::Csv`] reports, `name` is the dataset's name.
fn parse_csv(name: &str, source_name: &str, text: &str, label_column: Option<&str>) -> crate::Result<Dataset> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = records(source_name, text)?.into_iter();

    let Some((header_line, header)) = lines.next() else {
        return Err(csv_err(source_name, 0, "empty file: no header and no data rows"));
    };
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let header_list = header.join(", ");

    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, &col) in header.iter().enumerate() {
        if col.is_empty() {
            return Err(csv_err(
                source_name,
                header_line,
                format!("header column {} has an empty name (header: {header_list})", i + 1),
            ));
        }
        if let Some(first) = seen.insert(col, i) {
            return Err(csv_err(
                source_name,
                header_line,
                format!("duplicate column name '{col}' (columns {} and {})", first + 1, i + 1),
            ));
        }
    }

    let label_idx = match label_column {
        Some(label) => header.iter().position(|&c| c == label).ok_or_else(|| {
            csv_err(source_name, header_line, format!("unknown label column '{label}'; header has: {header_list}"))
        })?,
        None => header.len() - 1,
    };
    if header.len() < 2 {
        return Err(csv_err(
            source_name,
            header_line,
            format!("no feature columns: the header has only the label column '{}'", header[label_idx]),
        ));
    }
    let feature_cols: Vec<usize> = (0..header.len()).filter(|&i| i != label_idx).collect();

    let mut x: Vec<Vec<f64>> = Vec::new();
    let mut raw_labels: Vec<String> = Vec::new();
    for (line_no, cells) in lines {
        if cells.len() != header.len() {
            return Err(csv_err(
                source_name,
                line_no,
                format!("expected {} fields, found {}", header.len(), cells.len()),
            ));
        }
        let label = cells[label_idx].as_str();
        if is_missing(label) {
            return Err(csv_err(source_name, line_no, format!("missing value in column '{}'", header[label_idx])));
        }
        let mut row = Vec::with_capacity(feature_cols.len());
        for &c in &feature_cols {
            let cell = cells[c].as_str();
            let col = header[c];
            if is_missing(cell) {
                return Err(csv_err(source_name, line_no, format!("missing value in column '{col}'")));
            }
            let v: f64 = cell
                .parse()
                .map_err(|_| csv_err(source_name, line_no, format!("column '{col}': '{cell}' is not a number")))?;
            if !v.is_finite() {
                return Err(csv_err(source_name, line_no, format!("column '{col}': '{cell}' is not a finite number")));
            }
            row.push(v);
        }
        x.push(row);
        raw_labels.push(label.to_string());
    }

    if x.is_empty() {
        return Err(csv_err(source_name, 0, "no data rows: the file has a header only"));
    }

    let mut class_names: Vec<String> = raw_labels.iter().cloned().collect::<HashSet<String>>().into_iter().collect();
    let numeric: Option<Vec<f64>> =
        class_names.iter().map(|s| s.parse::<f64>().ok().filter(|v| v.is_finite())).collect();
    if numeric.is_some() {
        class_names.sort_by(|a, b| {
            let (va, vb) = (a.parse::<f64>().unwrap_or(0.0), b.parse::<f64>().unwrap_or(0.0));
            va.total_cmp(&vb).then_with(|| a.cmp(b))
        });
    } else {
        class_names.sort();
    }

    if class_names.len() < 2 {
        return Err(dataset_err(
            name,
            format!(
                "only one class ('{}'); classification needs at least 2",
                class_names.first().map(String::as_str).unwrap_or("")
            ),
        ));
    }

    let ids: HashMap<&str, usize> = class_names.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let y = raw_labels.iter().map(|l| ids[l.as_str()]).collect();

    Ok(Dataset {
        name: name.to_string(),
        feature_names: feature_cols.iter().map(|&c| header[c].to_string()).collect(),
        class_names,
        x,
        y,
    })
}

/// Train/validation split with features standardised by train statistics.
#[derive(Debug, Clone)]
pub struct Split {
    /// Name of the dataset the split came from.
    pub name: String,
    /// Number of features per row.
    pub num_features: usize,
    /// Number of classes; labels are in `0..num_classes`.
    pub num_classes: usize,
    /// Standardised training features, row-major `[n_train, num_features]`.
    pub train_x: Vec<f64>,
    /// Training labels, one per training row.
    pub train_y: Vec<usize>,
    /// Standardised validation features, row-major `[n_val, num_features]`.
    pub val_x: Vec<f64>,
    /// Validation labels, one per validation row.
    pub val_y: Vec<usize>,
    /// Per-feature training mean subtracted before scaling.
    pub mean: Vec<f64>,
    /// Per-feature training population standard deviation divided by (1 for a constant feature).
    pub std: Vec<f64>,
}

impl Split {
    /// Seeded stratified split. Classes are processed in label order with one
    /// `StdRng::seed_from_u64(seed)` for the whole split: each class's row indices are
    /// shuffled and the first `round(train_fraction * n_class)` go to train (at least 1,
    /// and at most `n_class - 1` when the class has >= 2 rows), the rest to validation.
    /// Train rows are then ordered by original row index, and so are validation rows.
    /// Every feature is standardised with the train mean and population std; a feature
    /// whose train std is 0 gets std 1 (and maps to exactly 0, not NaN).
    ///
    /// Errors with [`Error::Dataset`] if `train_fraction` is not in `(0, 1)`, if the
    /// dataset is inconsistent (row/label count mismatch, ragged rows, out-of-range
    /// labels), or if the validation set would be empty (every class has a single row).
    pub fn stratified(data: &Dataset, train_fraction: f64, seed: u64) -> crate::Result<Split> {
        let name = data.name.as_str();
        if !(train_fraction > 0.0 && train_fraction < 1.0) {
            return Err(dataset_err(name, format!("train fraction {train_fraction} is not in (0, 1)")));
        }
        let nf = data.num_features();
        let nc = data.num_classes();
        if data.x.len() != data.y.len() {
            return Err(dataset_err(name, format!("{} feature rows but {} labels", data.x.len(), data.y.len())));
        }
        if let Some((i, row)) = data.x.iter().enumerate().find(|(_, r)| r.len() != nf) {
            return Err(dataset_err(name, format!("row {i} has {} features, expected {nf}", row.len())));
        }
        if let Some((i, &label)) = data.y.iter().enumerate().find(|&(_, &l)| l >= nc) {
            return Err(dataset_err(name, format!("row {i} has label {label}, but there are only {nc} classes")));
        }

        let mut rng = StdRng::seed_from_u64(seed);
        let mut train_rows = Vec::new();
        let mut val_rows = Vec::new();
        for class in 0..nc {
            let mut rows: Vec<usize> = (0..data.len()).filter(|&i| data.y[i] == class).collect();
            let n = rows.len();
            if n == 0 {
                continue;
            }
            rows.shuffle(&mut rng);
            let mut n_train = (train_fraction * n as f64).round() as usize;
            n_train = n_train.max(1);
            if n >= 2 {
                n_train = n_train.min(n - 1);
            }
            train_rows.extend_from_slice(&rows[..n_train]);
            val_rows.extend_from_slice(&rows[n_train..]);
        }
        if val_rows.is_empty() {
            return Err(dataset_err(
                name,
                "too few rows for a train/validation split: the validation set would be empty",
            ));
        }
        train_rows.sort_unstable();
        val_rows.sort_unstable();

        let n_train = train_rows.len() as f64;
        let mut mean = vec![0.0; nf];
        let mut std = vec![1.0; nf];
        for f in 0..nf {
            let first = data.x[train_rows[0]][f];
            let constant = train_rows.iter().all(|&r| data.x[r][f] == first);
            if constant {
                // Exact mean, so every value of this feature maps to exactly 0.
                mean[f] = first;
                continue;
            }
            let m = train_rows.iter().map(|&r| data.x[r][f]).sum::<f64>() / n_train;
            let var = train_rows.iter().map(|&r| (data.x[r][f] - m).powi(2)).sum::<f64>() / n_train;
            let s = var.sqrt();
            mean[f] = m;
            std[f] = if s > 0.0 && s.is_finite() { s } else { 1.0 };
        }

        let gather = |rows: &[usize]| -> (Vec<f64>, Vec<usize>) {
            let mut xs = Vec::with_capacity(rows.len() * nf);
            for &r in rows {
                xs.extend(data.x[r].iter().enumerate().map(|(f, &v)| (v - mean[f]) / std[f]));
            }
            (xs, rows.iter().map(|&r| data.y[r]).collect())
        };
        let (train_x, train_y) = gather(&train_rows);
        let (val_x, val_y) = gather(&val_rows);

        Ok(Split {
            name: data.name.clone(),
            num_features: nf,
            num_classes: nc,
            train_x,
            train_y,
            val_x,
            val_y,
            mean,
            std,
        })
    }

    /// Number of training rows.
    pub fn n_train(&self) -> usize {
        self.train_y.len()
    }

    /// Number of validation rows.
    pub fn n_val(&self) -> usize {
        self.val_y.len()
    }

    /// The same split with class labels permuted by `perm` (`perm[old] = new`); error if not a permutation of 0..num_classes.
    pub fn permute_labels(&self, perm: &[usize]) -> crate::Result<Split> {
        let nc = self.num_classes;
        let mut hit = vec![false; nc];
        let is_perm = perm.len() == nc && perm.iter().all(|&p| p < nc && !std::mem::replace(&mut hit[p], true));
        if !is_perm {
            return Err(dataset_err(&self.name, format!("label permutation {perm:?} is not a permutation of 0..{nc}")));
        }
        let map = |ys: &[usize]| -> crate::Result<Vec<usize>> {
            ys.iter()
                .map(|&y| {
                    perm.get(y)
                        .copied()
                        .ok_or_else(|| dataset_err(&self.name, format!("label {y} is out of range for {nc} classes")))
                })
                .collect()
        };
        Ok(Split { train_y: map(&self.train_y)?, val_y: map(&self.val_y)?, ..self.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_message(result: crate::Result<Dataset>) -> (usize, String) {
        match result {
            Err(Error::Csv { line, message, .. }) => (line, message),
            other => panic!("expected Error::Csv, got {other:?}"),
        }
    }

    fn iris_split(seed: u64) -> Split {
        Split::stratified(&Dataset::iris(), 0.8, seed).expect("iris splits")
    }

    #[test]
    fn embedded_tables() {
        for (name, rows, features, classes) in
            [("iris", 150, 4, 3), ("wine", 178, 13, 3), ("breast-cancer", 569, 30, 2)]
        {
            let d = Dataset::embedded(name).expect("embedded");
            assert_eq!((d.len(), d.num_features(), d.num_classes()), (rows, features, classes), "{name}");
        }
        assert!(Dataset::embedded("mnist").is_none());
    }

    #[test]
    fn iris_loads() {
        let d = parse_csv("iris", "embedded iris", IRIS_CSV, Some("species")).expect("iris parses");
        assert_eq!(d.len(), 150);
        assert!(!d.is_empty());
        assert_eq!(d.num_features(), 4);
        assert_eq!(d.num_classes(), 3);
        assert_eq!(d.class_names, ["setosa", "versicolor", "virginica"]);
        assert_eq!(d.feature_names, ["sepal_length", "sepal_width", "petal_length", "petal_width"]);
        for c in 0..3 {
            assert_eq!(d.y.iter().filter(|&&y| y == c).count(), 50);
        }
        let expected_means = [5.843, 3.057, 3.758, 1.199];
        for (f, want) in expected_means.iter().enumerate() {
            let m = d.x.iter().map(|r| r[f]).sum::<f64>() / 150.0;
            assert!((m - want).abs() < 1e-3, "feature {f}: mean {m}, want {want}");
        }
        // Default label column (last) gives the same table.
        let d2 = Dataset::from_csv_str("iris", IRIS_CSV, None).expect("iris parses");
        assert_eq!(d2.y, d.y);
        assert_eq!(Dataset::iris().x, d.x);
    }

    #[test]
    fn quoted_fields_hold_commas_quotes_and_line_breaks() {
        let text = "\u{feff}\"width, cm\",\"height\",kind\n\n1.5,\"2\",\"big, \"\"red\"\"\"\n  \n3,4,\"small\nblue\"\n5,6,plain\n";
        let d = Dataset::from_csv_str("quoted", text, None).expect("parses");
        assert_eq!(d.feature_names, ["width, cm", "height"]);
        assert_eq!(d.class_names, ["big, \"red\"", "plain", "small\nblue"]);
        assert_eq!(d.x, vec![vec![1.5, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]);
        assert_eq!(d.y, vec![0, 2, 1]);
        // Line numbers count the lines of the file, also after a quoted line break.
        let (line, message) = csv_message(Dataset::from_csv_str("q", "a,b\n1,\"x\ny\"\n2,z\n3\n", None));
        assert_eq!(line, 5, "{message}");
        assert!(message.contains("expected 2 fields, found 1"), "{message}");
    }

    #[test]
    fn label_column_by_name_and_sorting() {
        let text = "\n label , a,b\n\nz, 1, 2\nb,3,4\nz,5,6\n";
        let d = Dataset::from_csv_str("t", text, Some("label")).expect("parses");
        assert_eq!(d.feature_names, ["a", "b"]);
        assert_eq!(d.class_names, ["b", "z"]);
        assert_eq!(d.y, [1, 0, 1]);
        assert_eq!(d.x, vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]);

        let numeric = "a,y\n1,10\n2,2\n3,1\n";
        let d = Dataset::from_csv_str("n", numeric, None).expect("parses");
        assert_eq!(d.class_names, ["1", "2", "10"]);
        assert_eq!(d.y, [2, 1, 0]);
    }

    #[test]
    fn empty_and_header_only() {
        let (_, m) = csv_message(Dataset::from_csv_str("t", "", None));
        assert!(m.contains("empty"), "{m}");
        let (_, m) = csv_message(Dataset::from_csv_str("t", "\n  \n", None));
        assert!(m.contains("empty"), "{m}");
        let (_, m) = csv_message(Dataset::from_csv_str("t", "a,b,label\n\n", None));
        assert!(m.contains("no data rows"), "{m}");
    }

    #[test]
    fn ragged_row() {
        let text = "a,b,c,d,label\n1,2,3,4,x\n\n1,2,3,y\n";
        let (line, m) = csv_message(Dataset::from_csv_str("t", text, None));
        assert_eq!(line, 4);
        assert!(m.contains("expected 5 fields, found 4"), "{m}");
    }

    #[test]
    fn non_numeric_cell() {
        let text = "sepal_length,sepal_width,species\n1,2,x\n1,abc,y\n";
        let (line, m) = csv_message(Dataset::from_csv_str("t", text, None));
        assert_eq!(line, 3);
        assert!(m.contains("column 'sepal_width': 'abc' is not a number"), "{m}");
        let text = "a,species\ninf,x\n1,y\n";
        let (_, m) = csv_message(Dataset::from_csv_str("t", text, None));
        assert!(m.contains("not a finite number"), "{m}");
    }

    #[test]
    fn missing_values() {
        for cell in ["", "NA", "NaN", "?", "na"] {
            let text = format!("x,w,label\n1,2,a\n3,{cell},b\n");
            let (line, m) = csv_message(Dataset::from_csv_str("t", &text, None));
            assert_eq!(line, 3);
            assert!(m.contains("missing value in column 'w'"), "{cell:?}: {m}");
        }
        let (_, m) = csv_message(Dataset::from_csv_str("t", "x,label\n1,a\n2,\n", None));
        assert!(m.contains("missing value in column 'label'"), "{m}");
    }

    #[test]
    fn unknown_label_column() {
        let text = "a,b,species\n1,2,x\n";
        let (line, m) = csv_message(Dataset::from_csv_str("t", text, Some("class")));
        assert_eq!(line, 1);
        assert!(m.contains("unknown label column 'class'"), "{m}");
        assert!(m.contains("a, b, species"), "{m}");
    }

    #[test]
    fn duplicate_header() {
        let text = "a,b,a,label\n1,2,3,x\n";
        let (_, m) = csv_message(Dataset::from_csv_str("t", text, None));
        assert!(m.contains("duplicate column name 'a'"), "{m}");
    }

    #[test]
    fn no_feature_columns() {
        let (_, m) = csv_message(Dataset::from_csv_str("t", "species\nx\ny\n", None));
        assert!(m.contains("no feature columns"), "{m}");
    }

    #[test]
    fn single_class() {
        let text = "a,species\n1,setosa\n2,setosa\n";
        match Dataset::from_csv_str("tiny", text, None) {
            Err(Error::Dataset { name, message }) => {
                assert_eq!(name, "tiny");
                assert!(message.contains("only one class ('setosa'); classification needs at least 2"), "{message}");
            }
            other => panic!("expected Error::Dataset, got {other:?}"),
        }
    }

    #[test]
    fn from_csv_path_reads_and_names_path() {
        let dir = std::env::temp_dir().join(format!("meta-nca-data-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("small.csv");
        std::fs::write(&file, "a,b,y\n1,2,p\n3,4,q\n").expect("write temp csv");
        let d = Dataset::from_csv_path(&file, None).expect("reads");
        assert_eq!(d.name, "small");
        assert_eq!(d.len(), 2);

        let missing = dir.join("does-not-exist.csv");
        match Dataset::from_csv_path(&missing, None) {
            Err(e @ Error::Io { .. }) => {
                assert!(e.to_string().contains("does-not-exist.csv"), "{e}")
            }
            other => panic!("expected Error::Io, got {other:?}"),
        }
        std::fs::write(&file, "a,b,y\n1,x,p\n").expect("write temp csv");
        match Dataset::from_csv_path(&file, None) {
            Err(Error::Csv { source_name, line, .. }) => {
                assert!(source_name.contains("small.csv"), "{source_name}");
                assert_eq!(line, 2);
            }
            other => panic!("expected Error::Csv, got {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stratified_iris_sizes() {
        let s = iris_split(7);
        assert_eq!((s.n_train(), s.n_val()), (120, 30));
        assert_eq!(s.train_x.len(), 120 * 4);
        assert_eq!(s.val_x.len(), 30 * 4);
        assert_eq!((s.num_features, s.num_classes), (4, 3));
        for c in 0..3 {
            assert_eq!(s.train_y.iter().filter(|&&y| y == c).count(), 40);
            assert_eq!(s.val_y.iter().filter(|&&y| y == c).count(), 10);
        }
        // Ordered by original row index, and iris rows are grouped by class.
        assert!(s.train_y.windows(2).all(|w| w[0] <= w[1]));
        assert!(s.val_y.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn standardised_train_features() {
        let s = iris_split(3);
        let n = s.n_train() as f64;
        for f in 0..s.num_features {
            let col: Vec<f64> = s.train_x.iter().skip(f).step_by(s.num_features).copied().collect();
            let m = col.iter().sum::<f64>() / n;
            let sd = (col.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt();
            assert!(m.abs() < 1e-9, "feature {f}: mean {m}");
            assert!((sd - 1.0).abs() < 1e-9, "feature {f}: std {sd}");
        }
        assert!(s.val_x.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn constant_feature_maps_to_zero() {
        let text = "a,c,y\n1,0.1,p\n2,0.1,p\n3,0.1,q\n4,0.1,q\n5,0.1,q\n";
        let d = Dataset::from_csv_str("t", text, None).expect("parses");
        let s = Split::stratified(&d, 0.6, 1).expect("splits");
        assert_eq!(s.std[1], 1.0);
        assert!(s.train_x.iter().chain(&s.val_x).skip(1).step_by(2).all(|&v| v == 0.0));
    }

    #[test]
    fn small_classes_keep_one_each_side() {
        let text = "a,y\n1,p\n2,p\n3,q\n4,q\n5,q\n6,r\n";
        let d = Dataset::from_csv_str("t", text, None).expect("parses");
        let s = Split::stratified(&d, 0.99, 5).expect("splits");
        // p: 2 rows -> 1/1; q: 3 rows -> 2/1; r: 1 row -> 1/0.
        assert_eq!(s.n_train(), 4);
        assert_eq!(s.n_val(), 2);
        let s = Split::stratified(&d, 0.01, 5).expect("splits");
        assert_eq!((s.n_train(), s.n_val()), (3, 3));
    }

    #[test]
    fn seeds() {
        let a = iris_split(42);
        let b = iris_split(42);
        let c = iris_split(43);
        assert_eq!(a.train_x, b.train_x);
        assert_eq!(a.val_x, b.val_x);
        assert_eq!(a.train_y, b.train_y);
        assert_ne!(a.train_x, c.train_x);
        assert_ne!(a.val_x, c.val_x);
    }

    #[test]
    fn bad_train_fraction() {
        let d = Dataset::iris();
        for f in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            match Split::stratified(&d, f, 0) {
                Err(Error::Dataset { message, .. }) => {
                    assert!(message.contains("train fraction"), "{message}")
                }
                other => panic!("expected Error::Dataset for {f}, got {other:?}"),
            }
        }
    }

    #[test]
    fn permute_labels() {
        let s = iris_split(1);
        let p = s.permute_labels(&[2, 0, 1]).expect("valid permutation");
        for (old, new) in s.train_y.iter().zip(&p.train_y).chain(s.val_y.iter().zip(&p.val_y)) {
            assert_eq!(*new, [2, 0, 1][*old]);
        }
        assert_eq!(p.train_x, s.train_x);
        assert_eq!(p.val_x, s.val_x);
        for bad in [&[0, 0, 1][..], &[0, 1][..], &[0, 1, 3][..], &[0, 1, 2, 3][..]] {
            match s.permute_labels(bad) {
                Err(Error::Dataset { message, .. }) => {
                    assert!(message.contains("not a permutation"), "{message}")
                }
                other => panic!("expected Error::Dataset for {bad:?}, got {other:?}"),
            }
        }
    }
}
