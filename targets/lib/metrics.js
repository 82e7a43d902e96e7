'use strict';
// /stats and /metrics figures the Node.js targets share: the process's own counts, and Prometheus text of the
// process, the V8 heap and every numeric /stats figure (agentws_<name>), written by hand (no client library).
const fs = require('node:fs');

/** How many entries a /proc directory has (0 where there is none). */
function count(dir) {
  try { return fs.readdirSync(dir).length; } catch { return 0; }
}

/** Open fds (the readdir's own handle left out) and threads of this process. */
function processCounts() {
  return { open_fds: count('/proc/self/fd') - 1, threads: count('/proc/self/task') };
}

/** Prometheus text: process_*, nodejs_* and each numeric figure of stats() (those process_* has left out). */
function metrics(stats) {
  const mem = process.memoryUsage();
  const cpu = process.cpuUsage();
  const lines = [];
  const put = (name, type, help, value) => lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${value}`);
  put('process_resident_memory_bytes', 'gauge', 'Resident memory size in bytes.', mem.rss);
  put('process_cpu_seconds_total', 'counter', 'Total user and system CPU time spent in seconds.', (cpu.user + cpu.system) / 1e6);
  put('process_open_fds', 'gauge', 'Number of open file descriptors.', processCounts().open_fds);
  put('nodejs_heap_size_used_bytes', 'gauge', 'Process heap size used from Node.js in bytes.', mem.heapUsed);
  put('nodejs_heap_size_total_bytes', 'gauge', 'Process heap size from Node.js in bytes.', mem.heapTotal);
  put('nodejs_external_memory_bytes', 'gauge', 'Node.js external memory size in bytes.', mem.external);
  for (const [name, value] of Object.entries(stats)) {
    if (typeof value !== 'number' || ['pid', 'rss_bytes', 'open_fds', 'threads'].includes(name)) continue; // process_*
    put(`agentws_${name}`, name.endsWith('_total') ? 'counter' : 'gauge', name, value);
  }
  return `${lines.join('\n')}\n`;
}

module.exports = { metrics, processCounts };
