#!/usr/bin/env python3
"""The log-analysis job (error totals per status and region) as a Hadoop Streaming job, run by
mrjob (PyPI `mrjob`): the map tasks are kinesis-reader in map mode, each reading the shards named
by its line of a `kinesis-reader plan` manifest and piping their records into mapper.py; the
reducers are reducer.py --all. The same job runs on mrjob's local runner (below), which starts
several map and reduce tasks the way Hadoop Streaming does, and on a Hadoop cluster (-r hadoop).

    M=$(mktemp)
    kinesis-reader plan --stream access-logs --checkpoint-table emr-checkpoints \\
        --logical-name top-errors --iteration next > "$M"
    python3 mrjob_top_errors.py -r local --num-cores 2 \\
        --jobconf kinesis.checkpoint.metastore.table.name=emr-checkpoints "$M"
    kinesis-reader finish --stream access-logs --checkpoint-table emr-checkpoints \\
        --logical-name top-errors --iteration N        # after the job succeeded

kinesis-reader must be on the PATH of the tasks; the stream, logical name and iteration come
from the manifest, the checkpoint table from the jobconf (EMR's names). Each map task prints
Hadoop counters (group KinesisReader: records, bytes, shards), which mrjob shows at the end.
"""
import os

from mrjob.job import MRJob
from mrjob.step import MRStep

LOG_ANALYSIS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "log-analysis")


class TopErrors(MRJob):
    FILES = [os.path.join(LOG_ANALYSIS, "mapper.py"), os.path.join(LOG_ANALYSIS, "reducer.py")]

    def steps(self):
        return [
            MRStep(
                mapper_cmd="kinesis-reader --shards-from-stdin -- python3 mapper.py",
                reducer_cmd="python3 reducer.py --all",
            )
        ]


if __name__ == "__main__":
    TopErrors.run()
