// A YARN cluster on this machine for the engine tests: MiniMRYarnCluster
// (a ResourceManager, 2 NodeManagers and a JobHistoryServer in this JVM,
// listening on 127.0.0.1), on the local file system. It writes the
// cluster's configuration to DIR/*-site.xml, so that a job client given
// HADOOP_CONF_DIR=DIR submits to it, prints "ready" and runs until its
// standard input closes. Run as a single-file program:
//   java -cp "$(cat yarn.classpath)" MiniYarn.java DIR
import java.io.FileOutputStream;
import java.io.OutputStream;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.mapreduce.v2.MiniMRYarnCluster;
import org.apache.hadoop.yarn.conf.YarnConfiguration;

public class MiniYarn {
  public static void main(String[] args) throws Exception {
    String dir = args[0];
    Configuration conf = new YarnConfiguration();
    conf.set("fs.defaultFS", "file:///");
    conf.set("yarn.resourcemanager.hostname", "127.0.0.1");
    conf.set("yarn.nodemanager.hostname", "127.0.0.1");
    conf.set("mapreduce.jobhistory.address", "127.0.0.1:0");
    // Small containers: 2 NodeManagers on a 2-core machine.
    conf.setInt("yarn.nodemanager.resource.memory-mb", 3072);
    conf.setInt("yarn.scheduler.minimum-allocation-mb", 256);
    conf.setInt("yarn.app.mapreduce.am.resource.mb", 512);
    conf.setInt("mapreduce.map.memory.mb", 384);
    conf.setInt("mapreduce.reduce.memory.mb", 384);
    conf.set("yarn.app.mapreduce.am.command-opts", "-Xmx400m");
    conf.set("mapreduce.map.java.opts", "-Xmx256m");
    conf.set("mapreduce.reduce.java.opts", "-Xmx256m");
    conf.setBoolean("yarn.nodemanager.vmem-check-enabled", false);
    // The NodeManagers check this machine's own disk: past 90 % used (a build
    // machine's often is) they mark every local dir bad, no container starts,
    // and a job waits for its ApplicationMaster forever.
    conf.setFloat("yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage", 99.9f);
    // Containers (the MR ApplicationMaster, the tasks) run on the jars this
    // JVM runs on, as a cluster's containers run on its installed jars.
    String jars = System.getProperty("java.class.path");
    conf.set("yarn.application.classpath", jars);
    conf.set("mapreduce.application.classpath", jars);
    MiniMRYarnCluster cluster = new MiniMRYarnCluster("kinesis-streaming", 2);
    cluster.init(conf);
    cluster.start();
    // The whole configuration in each site file: JobConf reads mapred-default
    // after core-site, so a setting only in core-site would be overridden.
    for (String site : new String[] {"core-site.xml", "mapred-site.xml", "yarn-site.xml"}) {
      try (OutputStream out = new FileOutputStream(dir + "/" + site)) {
        cluster.getConfig().writeXml(out);
      }
    }
    System.out.println("ready");
    System.out.flush();
    while (System.in.read() != -1) {}
    cluster.stop();
  }
}
