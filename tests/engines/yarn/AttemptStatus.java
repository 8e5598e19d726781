// Watches a running job's map attempts as the MR ApplicationMaster's web UI
// shows them: its REST API (through the ResourceManager's proxy) gives each
// attempt's id, state and status, the last `reporter:status:` its task
// wrote. (The client API's task reports carry the task's state, not this
// text.) Every 300 ms it prints one line per map task, the API's JSON for
// its attempts, then a line "end"; it stops when the ApplicationMaster is
// gone. yarn.rs compiles it and runs it with the cluster's configuration
// first on the Hadoop classpath:
//   java -cp "CLASSES:$HADOOP_CONF_DIR:$(cat hadoop.classpath)" AttemptStatus JOB_ID
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.hadoop.yarn.conf.YarnConfiguration;

public class AttemptStatus {
  private static final HttpClient HTTP =
      HttpClient.newBuilder().followRedirects(HttpClient.Redirect.NORMAL).build();

  public static void main(String[] args) throws Exception {
    String job = args[0];
    String app = job.replaceFirst("^job_", "application_");
    String rm = new YarnConfiguration().get(YarnConfiguration.RM_WEBAPP_ADDRESS);
    String base = "http://" + rm + "/proxy/" + app + "/ws/v1/mapreduce/jobs/" + job + "/tasks";
    Pattern taskId = Pattern.compile("\"id\"\\s*:\\s*\"(task_[^\"]+)\"");
    boolean answered = false;
    while (true) {
      // Before the ApplicationMaster is up there is no answer yet; once it
      // has answered, no answer means it is gone.
      String tasks = get(base + "?type=m");
      if (tasks == null) {
        if (answered) {
          return;
        }
        Thread.sleep(300);
        continue;
      }
      answered = true;
      StringBuilder out = new StringBuilder();
      Matcher m = taskId.matcher(tasks);
      while (m.find()) {
        String attempts = get(base + "/" + m.group(1) + "/attempts");
        if (attempts != null) {
          out.append(attempts.replace('\n', ' ')).append('\n');
        }
      }
      System.out.print(out.append("end\n"));
      System.out.flush();
      Thread.sleep(300);
    }
  }

  static String get(String url) throws InterruptedException {
    HttpRequest req = HttpRequest.newBuilder(URI.create(url)).header("Accept", "application/json").build();
    try {
      HttpResponse<String> res = HTTP.send(req, HttpResponse.BodyHandlers.ofString());
      return res.statusCode() == 200 ? res.body() : null;
    } catch (java.io.IOException e) {
      return null;
    }
  }
}
