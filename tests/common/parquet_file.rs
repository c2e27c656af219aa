//! Writing Parquet files in the Hub's ag_news layout, for the tests of kd's Parquet reader and
//! of Hub dataset downloads.
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use std::path::Path;
use std::sync::Arc;

/// Writes `text` (UTF-8) and `label` (int64) columns, snappy-compressed, as the Hub's
/// `data/{train,test}-00000-of-00001.parquet` files are.
pub fn write_parquet(path: &Path, texts: &[&str], labels: &[i64]) {
    write_parquet_with_names(path, texts, labels, None)
}

/// [`write_parquet`], with the `huggingface` schema metadata `datasets` writes for a
/// `ClassLabel` label column named `names`.
pub fn write_parquet_with_names(
    path: &Path,
    texts: &[&str],
    labels: &[i64],
    names: Option<&[&str]>,
) {
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message schema { REQUIRED BYTE_ARRAY text (UTF8); REQUIRED INT64 label; }",
        )
        .unwrap(),
    );
    let metadata = names.map(|names| {
        let features = serde_json::json!({"info": {"features": {
            "text": {"dtype": "string", "_type": "Value"},
            "label": {"names": names, "_type": "ClassLabel"},
        }}});
        vec![parquet::file::metadata::KeyValue::new(
            "huggingface".to_string(),
            features.to_string(),
        )]
    });
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_key_value_metadata(metadata)
            .build(),
    );
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let values: Vec<ByteArray> = texts.iter().map(|t| ByteArray::from(*t)).collect();
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<ByteArrayType>()
        .write_batch(&values, None, None)
        .unwrap();
    col.close().unwrap();
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<Int64Type>()
        .write_batch(labels, None, None)
        .unwrap();
    col.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();
}
