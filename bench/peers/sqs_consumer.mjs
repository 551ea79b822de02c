// Peer for the benchmark: the npm `sqs-consumer` package as its README shows it, storing each
// message with the `pg` client, one INSERT per event (as pg's docs show a query). Started by
// mailroom-bench from the peers cache dir (where node_modules is), with QUEUE_URL,
// DATABASE_URL and AWS_ENDPOINT_URL set. CONSUMERS (default 4) Consumer instances share the
// queue and the pool, as the reference measurement ran it ("4 consumers").
import { Consumer } from "sqs-consumer";
import { SQSClient } from "@aws-sdk/client-sqs";
import { createHash } from "node:crypto";
import pg from "pg";

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
const queue = "peer";

async function handleMessage(message) {
  const envelope = JSON.parse(message.Body);
  const body = Buffer.from(envelope.body_b64, "base64");
  if (envelope.kind === "events") {
    for (const e of JSON.parse(body.toString("utf8"))) {
      await pool.query(
        "INSERT INTO mailroom_events (sg_event_id, event, email, occurred_at, payload, sqs_message_id, queue) " +
          "VALUES ($1, $2, $3, to_timestamp($4), $5, $6, $7) ON CONFLICT (sg_event_id) DO NOTHING",
        [e.sg_event_id, e.event, e.email, e.timestamp, e, message.MessageId, queue],
      );
    }
  } else {
    await pool.query(
      "INSERT INTO mailroom_inbound_emails (dedup_key, sqs_message_id, queue, mode, raw_mime) " +
        "VALUES ($1, $2, $3, 'parsed', $4) ON CONFLICT (dedup_key) DO NOTHING",
      [createHash("sha256").update(body).digest("hex"), message.MessageId, queue, body],
    );
  }
}

const sqs = new SQSClient({
  endpoint: process.env.AWS_ENDPOINT_URL,
  region: "us-east-1",
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
});
const apps = Array.from({ length: Number(process.env.CONSUMERS || 4) }, () => {
  const app = Consumer.create({
    queueUrl: process.env.QUEUE_URL,
    batchSize: 10,
    waitTimeSeconds: 1,
    handleMessage,
    sqs,
  });
  app.on("error", (err) => console.error(err.message));
  app.on("processing_error", (err) => console.error(err.message));
  app.start();
  return app;
});
process.on("SIGTERM", () => {
  apps.forEach((app) => app.stop());
  pool.end().then(() => process.exit(0));
});
