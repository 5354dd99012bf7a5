// Runs dynalite (npm), an in-memory DynamoDB on LevelDB, on loopback for the benchmark: unlike
// moto it keeps connections open, so a worker's ledger calls cost what they would against
// DynamoDB rather than a new connection each. Prints the port on the first line of standard
// output; stops when standard input closes or on SIGTERM/SIGINT.
//
// dynalite lacks two operations Shoal calls, so a front on the printed port answers them and
// passes everything else through:
// - UpdateTimeToLive: accepted (dynalite never expires items; the benchmark never needs it);
// - TransactWriteItems of Puts (the lease-less kinds' outcomes): carried out as conditional
//   PutItems, one after another, answering TransactionCanceledException with a reason per
//   item when a condition fails. There is no rollback: good for load-shaped runs, where every
//   job id is new, not for tests of races (the test suite's fault proxy does those, on moto).
//
// SHOAL_DYNALITE_DIR names the npm prefix dynalite is installed under (scripts/lib.sh).
import http from "node:http";
import { createRequire } from "node:module";
import { join } from "node:path";

const dir = process.env.SHOAL_DYNALITE_DIR;
if (!dir) {
  console.error("SHOAL_DYNALITE_DIR is not set (scripts/lib.sh installs dynalite and sets it)");
  process.exit(3);
}
const require = createRequire(join(dir, "package.json"));
const dynalite = require("dynalite")({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
await new Promise((resolve) => dynalite.listen(0, "127.0.0.1", resolve));
const inner = dynalite.address().port;
const agent = new http.Agent({ keepAlive: true });
const TARGET = "DynamoDB_20120810.";

function call(operation, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port: inner,
        method: "POST",
        path: "/",
        agent,
        headers: {
          ...headers,
          "x-amz-target": TARGET + operation,
          "content-length": Buffer.byteLength(body),
        },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

function reply(res, status, json) {
  const body = JSON.stringify(json);
  res.writeHead(status, {
    "content-type": "application/x-amz-json-1.0",
    "content-length": Buffer.byteLength(body),
    "x-amzn-requestid": "dynalite-front",
  });
  res.end(body);
}

async function transact(request, headers) {
  const items = request.TransactItems || [];
  if (!items.every((i) => i.Put)) {
    return [400, { __type: "com.amazon.coral.validate#ValidationException", message: "this front carries out Puts only" }];
  }
  const reasons = [];
  let cancelled = false;
  for (const { Put } of items) {
    if (cancelled) {
      reasons.push({ Code: "None" });
      continue;
    }
    const answer = await call("PutItem", JSON.stringify(Put), headers);
    if (answer.status === 200) {
      reasons.push({ Code: "None" });
      continue;
    }
    const error = JSON.parse(answer.body.toString() || "{}");
    if (String(error.__type).endsWith("ConditionalCheckFailedException")) {
      reasons.push({ Code: "ConditionalCheckFailed", Message: "The conditional request failed" });
      cancelled = true;
    } else {
      return [answer.status, error];
    }
  }
  if (!cancelled) return [200, {}];
  return [400, {
    __type: "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
    message: `Transaction cancelled, please refer cancellation reasons for specific reasons [${reasons.map((r) => r.Code).join(", ")}]`,
    CancellationReasons: reasons,
  }];
}

const front = http.createServer({ keepAlive: true }, (req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", async () => {
    const body = Buffer.concat(chunks).toString();
    const operation = String(req.headers["x-amz-target"] || "").replace(TARGET, "");
    // dynalite checks that a signature is there, not what it signs.
    const headers = {
      "content-type": req.headers["content-type"] || "application/x-amz-json-1.0",
      authorization: req.headers.authorization || "",
      "x-amz-date": req.headers["x-amz-date"] || "",
    };
    try {
      if (operation === "UpdateTimeToLive") {
        const request = JSON.parse(body);
        return reply(res, 200, { TimeToLiveSpecification: request.TimeToLiveSpecification });
      }
      if (operation === "TransactWriteItems") {
        const [status, json] = await transact(JSON.parse(body), headers);
        return reply(res, status, json);
      }
      const answer = await call(operation, body, headers);
      res.writeHead(answer.status, answer.headers);
      res.end(answer.body);
    } catch (e) {
      reply(res, 500, { __type: "com.amazonaws.dynamodb.v20120810#InternalServerError", message: String(e) });
    }
  });
});
await new Promise((resolve) => front.listen(0, "127.0.0.1", resolve));
console.log(front.address().port);

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  front.close();
  dynalite.close();
  agent.destroy();
  process.exit(0);
}
process.stdin.on("end", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
