-- Hive / Impala / Athena: the iterations that run.sh loads, as one partitioned table.
-- Every iteration is a partition (iteration_no=N); rerunning an iteration overwrites the same
-- object, so a partition never holds an iteration twice.
CREATE EXTERNAL TABLE IF NOT EXISTS access_logs (
  ip           STRING,
  request_time TIMESTAMP,
  method       STRING,
  path         STRING,
  status       INT,
  bytes        BIGINT,
  browser      STRING,
  region       STRING
)
PARTITIONED BY (iteration_no INT)
ROW FORMAT DELIMITED FIELDS TERMINATED BY '\t' LINES TERMINATED BY '\n'
STORED AS TEXTFILE
LOCATION 's3://${BUCKET}/access_logs/';

-- Pick up new iterations (Hive: MSCK REPAIR; Impala: ALTER TABLE ... RECOVER PARTITIONS).
MSCK REPAIR TABLE access_logs;

-- Ad-hoc: server errors per region in one iteration, and across all of them.
SELECT region, count(*) AS errors FROM access_logs
 WHERE iteration_no = 1 AND status >= 500 GROUP BY region ORDER BY errors DESC;
SELECT iteration_no, browser, count(*) AS requests FROM access_logs
 GROUP BY iteration_no, browser ORDER BY iteration_no, requests DESC;
