"""Sales data in plain Python: the CSV contract, the row rules, the upload preview, the generator.

- `contract`: the columns, upload ids and the upload event (no Spark, no Kafka);
- `rules`: how one CSV value is judged, shared by the preview and the Spark job;
- `preview`: the streaming inspection an upload answers with (`preview_records` splits the text
  into records, `preview_report` judges them, `line_hashes` finds duplicate lines);
- `catalog` and `generate`: the seeded demo data generator and the stores/products it draws from.
"""
