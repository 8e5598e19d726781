// A small `hive -f` for the tests: runs a HiveQL script on Hive 4.1's
// Driver (hive-exec), in local mode (MapReduce's LocalJobRunner), with an
// embedded Derby metastore, warehouse and scratch space in the current
// directory. Maven Central has no hive-cli or hive-beeline 4.1.0 to run
// instead. Takes what the hive command takes for this:
//   HiveQL.java -f SCRIPT [--hivevar NAME=VALUE]... [--hiveconf KEY=VALUE]...
// and prints each query's rows, tab-separated, on stdout. The first failed
// statement ends it with exit code 1 and Hive's message on stderr.
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.hive.conf.HiveConf;
import org.apache.hadoop.hive.ql.DriverFactory;
import org.apache.hadoop.hive.ql.IDriver;
import org.apache.hadoop.hive.conf.VariableSubstitution;
import org.apache.hadoop.hive.ql.processors.CommandProcessor;
import org.apache.hadoop.hive.ql.processors.CommandProcessorException;
import org.apache.hadoop.hive.ql.processors.CommandProcessorFactory;
import org.apache.hadoop.hive.ql.session.SessionState;

public class HiveQL {
  public static void main(String[] args) throws Exception {
    Path here = Path.of(System.getProperty("user.dir"));
    HiveConf conf = new HiveConf(SessionState.class);
    conf.set("fs.defaultFS", "file:///");
    conf.set("mapreduce.framework.name", "local");
    conf.set("hive.execution.engine", "mr");
    conf.set("hive.metastore.uris", "");
    conf.set("javax.jdo.option.ConnectionURL",
        "jdbc:derby:;databaseName=" + here.resolve("metastore_db") + ";create=true");
    conf.set("hive.metastore.warehouse.dir", here.resolve("warehouse").toUri().toString());
    conf.set("hive.exec.scratchdir", here.resolve("scratch").toString());
    conf.set("hive.exec.local.scratchdir", here.resolve("scratch-local").toString());
    // A new Derby metastore has no schema yet: create it, and do not ask
    // for a schema version that nothing wrote.
    conf.set("datanucleus.schema.autoCreateAll", "true");
    conf.set("metastore.schema.verification", "false");
    conf.set("hive.query.reexecution.stats.persist.scope", "query");
    String script = null;
    List<String[]> vars = new ArrayList<>();
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "-f" -> script = args[++i];
        case "--hivevar", "-hivevar", "-d", "--define" -> vars.add(args[++i].split("=", 2));
        case "--hiveconf", "-hiveconf" -> {
          String[] kv = args[++i].split("=", 2);
          conf.set(kv[0], kv[1]);
        }
        default -> throw new IllegalArgumentException("unknown argument " + args[i]);
      }
    }
    if (script == null) {
      throw new IllegalArgumentException("usage: HiveQL -f SCRIPT [--hivevar NAME=VALUE]...");
    }
    SessionState session = new SessionState(conf);
    for (String[] kv : vars) {
      session.getHiveVariables().put(kv[0], kv[1]);
    }
    SessionState.start(session);
    for (String statement : statements(Files.readString(Path.of(script)))) {
      // SET, ADD FILE and the like are the command's own, not SQL: as the
      // hive command does, they go to their processor, variables replaced.
      String[] words = statement.strip().split("\\s+", 2);
      CommandProcessor own = CommandProcessorFactory.getForHiveCommand(words, conf);
      try {
        if (own != null) {
          String rest = words.length > 1 ? words[1] : "";
          rest = new VariableSubstitution(session::getHiveVariables).substitute(conf, rest);
          own.run(rest);
          continue;
        }
        // A driver per query, as the hive command has: a driver's settings
        // are those of the session when it was made.
        IDriver driver = DriverFactory.newDriver(conf);
        driver.run(statement);
        List<String> rows = new ArrayList<>();
        while (driver.getResults(rows)) {
          rows.forEach(System.out::println);
          rows.clear();
        }
        driver.close();
      } catch (CommandProcessorException e) {
        // Hive has said why on stderr; say which statement.
        System.err.println("HiveQL: this statement failed (code " + e.getResponseCode() + "):\n" + statement.strip());
        System.exit(1);
      }
    }
    System.out.flush();
    System.exit(0);
  }

  // The script's statements: split at ';' outside quotes, `--` comments
  // dropped, as the hive command does.
  static List<String> statements(String text) {
    List<String> out = new ArrayList<>();
    StringBuilder now = new StringBuilder();
    char quote = 0;
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      if (quote != 0) {
        now.append(c);
        if (c == '\\' && i + 1 < text.length()) {
          now.append(text.charAt(++i));
        } else if (c == quote) {
          quote = 0;
        }
      } else if (c == '\'' || c == '"' || c == '`') {
        quote = c;
        now.append(c);
      } else if (c == '-' && text.startsWith("--", i)) {
        while (i < text.length() && text.charAt(i) != '\n') {
          i++;
        }
        now.append('\n');
      } else if (c == ';') {
        if (!now.toString().isBlank()) {
          out.add(now.toString());
        }
        now.setLength(0);
      } else {
        now.append(c);
      }
    }
    if (!now.toString().isBlank()) {
      out.add(now.toString());
    }
    return out;
  }
}
