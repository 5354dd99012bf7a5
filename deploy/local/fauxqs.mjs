// Runs fauxqs, a fast SQS/SNS emulator, on loopback for load tests and benchmarks
// (moto's SQS slows down as a queue fills). Prints the port on the first line of standard
// output; stops when standard input closes or on SIGTERM/SIGINT.
//
// SHOAL_FAUXQS_DIR names the npm prefix fauxqs is installed under. fauxqs@1 binds every
// interface, so scripts/lib.sh patches the installed copy to 127.0.0.1; this launcher
// refuses to start an unpatched copy.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const dir = process.env.SHOAL_FAUXQS_DIR;
if (!dir) {
  console.error("SHOAL_FAUXQS_DIR is not set (scripts/lib.sh installs fauxqs and sets it)");
  process.exit(3);
}
const appPath = join(dir, "node_modules", "fauxqs", "dist", "app.js");
if (readFileSync(appPath, "utf8").includes('host: "0.0.0.0"')) {
  console.error(`${appPath} still listens on every interface; refusing to start`);
  process.exit(2);
}
const { startFauxqs } = await import(pathToFileURL(appPath).href);
const server = await startFauxqs({ port: 0, logger: false });
console.log(server.port);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await server.stop();
  process.exit(0);
}
process.stdin.on("end", stop);
process.stdin.on("error", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
