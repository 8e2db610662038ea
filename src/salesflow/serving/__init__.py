"""Forecasts answered in-process from saved model versions, with no JVM.

- `forest`: a saved Spark forest walked with numpy (`Forecaster`);
- `jvm_float`: the JVM's floating-point sums reproduced, so answers equal Spark's bit for bit;
- `facts`: what a version's metadata says (lineage, interval widths, fallback means);
- `table`: a version's forecast table (the contract, lookups, `write_table`);
- `model`: a served model version (forest- or table-backed) and the answer rule;
- `service`: the forecast service (single queries, series, fallbacks) over the registry;
- `predict_csv`: predictions for a small sales CSV without Spark;
- `history`: the curated histories' actuals, read without Spark.
"""
