// The YARN test's task-runtime estimator: it makes a speculative map attempt
// certain. The test names a task in the file that the job setting
// certain.speculation.file gives, once it has seen that task's first attempt
// wait; from then on that attempt is said to need an hour, so once another
// map task has finished (the speculator needs one to compare with) the MR
// ApplicationMaster starts a second attempt of the task beside it. No other
// task is ever speculated: left to Hadoop's own estimates, the other waiting
// tasks could be speculated too on a loaded machine, and the test's attempt
// counts would then come out one higher. yarn.rs compiles it onto the mini-cluster's
// classpath, where the ApplicationMaster loads it from
// yarn.app.mapreduce.am.job.task.estimator.class.
import java.nio.file.Files;
import java.nio.file.Path;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.mapreduce.v2.api.records.TaskAttemptId;
import org.apache.hadoop.mapreduce.v2.api.records.TaskId;
import org.apache.hadoop.mapreduce.v2.app.AppContext;
import org.apache.hadoop.mapreduce.v2.app.speculate.LegacyTaskRuntimeEstimator;
import org.apache.hadoop.mapreduce.v2.util.MRApps;

public class CertainSpeculation extends LegacyTaskRuntimeEstimator {
  private static final long AN_HOUR_MS = 3_600_000L;
  private Path named;

  @Override
  public void contextualize(Configuration conf, AppContext context) {
    super.contextualize(conf, context);
    named = Path.of(conf.get("certain.speculation.file"));
  }

  @Override
  public long estimatedRuntime(TaskAttemptId attempt) {
    return attempt.getId() == 0 && isNamed(MRApps.toString(attempt.getTaskId()))
        ? AN_HOUR_MS
        : super.estimatedRuntime(attempt);
  }

  // The speculator leaves a task whose threshold is Long.MAX_VALUE alone.
  @Override
  public long thresholdRuntime(TaskId task) {
    return isNamed(MRApps.toString(task)) ? super.thresholdRuntime(task) : Long.MAX_VALUE;
  }

  private boolean isNamed(String task) {
    try {
      return Files.exists(named) && Files.readString(named).trim().equals(task);
    } catch (java.io.IOException e) {
      return false;
    }
  }
}
