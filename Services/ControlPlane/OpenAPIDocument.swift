import Hummingbird

/// The OpenAPI 3.1 document of the public API, served at `GET /api/openapi.json`. A test keeps
/// it true: every operation in it is routed, and every route is in it.
enum OpenAPIDocument {
    static func add(to router: Router<some RequestContext>) {
        router.get("api/openapi.json") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: json))
            )
        }
    }

    static let json = #"""
        {
          "openapi": "3.1.0",
          "info": {
            "title": "Sessions API",
            "version": "0.1.0",
            "description": "Durable, bidirectional streams for AI agents and long-running tasks. Authenticate with `Authorization: Bearer <secret key or public access token>`. Errors are `{\"error\": \"<message>\"}`; every response carries `X-Request-Id`; any route answers 503 with `Retry-After` while a store it needs is unreachable."
          },
          "servers": [{ "url": "http://127.0.0.1:8080" }],
          "security": [{ "bearer": [] }],
          "paths": {
            "/api/v1/sessions": {
              "get": {
                "operationId": "listSessions",
                "summary": "List sessions, newest first (from ClickHouse; items show their latest state)",
                "description": "Query values are form-encoded: + is a space; write a plus sign as %2B.",
                "parameters": [
                  { "name": "filter[type]", "in": "query", "style": "form", "explode": true, "schema": { "type": "array", "items": { "type": "string" } }, "description": "Any of these types: repeated keys, or values joined by a literal (unencoded) comma; %2C is a comma inside a value" },
                  { "name": "filter[tags]", "in": "query", "style": "form", "explode": true, "schema": { "type": "array", "items": { "type": "string" } }, "description": "Any of these tags (repeated, or joined by a literal comma)" },
                  { "name": "filter[taskIdentifier]", "in": "query", "style": "form", "explode": true, "schema": { "type": "array", "items": { "type": "string" } }, "description": "Any of these tasks (repeated, or joined by a literal comma)" },
                  { "name": "filter[externalId]", "in": "query", "style": "form", "explode": true, "schema": { "type": "array", "items": { "type": "string" } }, "description": "Any of these externalIds (repeated, or joined by a literal comma)" },
                  { "name": "filter[status]", "in": "query", "style": "form", "explode": true, "schema": { "type": "array", "items": { "enum": ["ACTIVE", "CLOSED", "EXPIRED"] } }, "description": "Any of these statuses, in any letter case (repeated, or joined by a literal comma)" },
                  { "name": "filter[createdAt][period]", "in": "query", "schema": { "type": "string" }, "description": "30m, 24h, 7d, …" },
                  { "name": "filter[createdAt][from]", "in": "query", "schema": { "type": "string" }, "description": "Epoch ms or ISO-8601 (a date alone is its midnight UTC)" },
                  { "name": "filter[createdAt][to]", "in": "query", "schema": { "type": "string" }, "description": "Epoch ms or ISO-8601 (a date alone is its midnight UTC)" },
                  { "name": "page[size]", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 100, "default": 20 } },
                  { "name": "page[after]", "in": "query", "schema": { "type": "string" } },
                  { "name": "page[before]", "in": "query", "schema": { "type": "string" } }
                ],
                "responses": {
                  "200": { "description": "A page", "content": { "application/json": { "schema": { "type": "object", "required": ["data", "pagination"], "properties": { "data": { "type": "array", "items": { "$ref": "#/components/schemas/Session" } }, "pagination": { "type": "object", "properties": { "next": { "type": "string" }, "previous": { "type": "string" } } } } } } } },
                  "400": { "$ref": "#/components/responses/BadRequest" },
                  "401": { "$ref": "#/components/responses/Unauthorized" },
                  "403": { "$ref": "#/components/responses/Forbidden" },
                  "503": { "$ref": "#/components/responses/Unavailable" }
                }
              },
              "post": {
                "operationId": "createSession",
                "summary": "Create a session (idempotent by externalId)",
                "requestBody": {
                  "required": true,
                  "content": { "application/json": { "schema": { "$ref": "#/components/schemas/CreateSession" } } }
                },
                "responses": {
                  "200": { "description": "The session with this externalId already existed", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/CreatedSession" } } } },
                  "201": { "description": "Created", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/CreatedSession" } } } },
                  "400": { "$ref": "#/components/responses/BadRequest" },
                  "401": { "$ref": "#/components/responses/Unauthorized" },
                  "403": { "$ref": "#/components/responses/Forbidden" },
                  "409": { "$ref": "#/components/responses/Conflict" },
                  "413": { "$ref": "#/components/responses/TooLarge" }
                }
              }
            },
            "/api/v1/sessions/{session}": {
              "parameters": [{ "$ref": "#/components/parameters/Session" }],
              "get": {
                "operationId": "retrieveSession",
                "summary": "Retrieve a session by friendlyId or externalId",
                "responses": {
                  "200": { "description": "The session", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Session" } } } },
                  "400": { "$ref": "#/components/responses/BadRequest" },
                  "401": { "$ref": "#/components/responses/Unauthorized" },
                  "403": { "$ref": "#/components/responses/Forbidden" },
                  "404": { "$ref": "#/components/responses/NotFound" }
                }
              },
              "patch": {
                "operationId": "updateSession",
                "summary": "Update tags, metadata or externalId",
                "requestBody": {
                  "required": true,
                  "content": { "application/json": { "schema": { "$ref": "#/components/schemas/UpdateSession" } } }
                },
                "responses": {
                  "200": { "description": "The updated session", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Session" } } } },
                  "400": { "$ref": "#/components/responses/BadRequest" },
                  "401": { "$ref": "#/components/responses/Unauthorized" },
                  "403": { "$ref": "#/components/responses/Forbidden" },
                  "404": { "$ref": "#/components/responses/NotFound" },
                  "409": { "$ref": "#/components/responses/Conflict" },
                  "413": { "$ref": "#/components/responses/TooLarge" }
                }
              }
            },
            "/api/v1/sessions/{session}/close": {
              "parameters": [{ "$ref": "#/components/parameters/Session" }],
              "post": {
                "operationId": "closeSession",
                "summary": "Close a session (idempotent, the first close wins)",
                "requestBody": {
                  "required": false,
                  "content": { "application/json": { "schema": { "$ref": "#/components/schemas/CloseSession" } } }
                },
                "responses": {
                  "200": { "description": "The closed session", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Session" } } } },
                  "400": { "$ref": "#/components/responses/BadRequest" },
                  "401": { "$ref": "#/components/responses/Unauthorized" },
                  "403": { "$ref": "#/components/responses/Forbidden" },
                  "404": { "$ref": "#/components/responses/NotFound" },
                  "413": { "$ref": "#/components/responses/TooLarge" }
                }
              }
            },
            "/realtime/v1/sessions/{session}/{io}": {
              "parameters": [{ "$ref": "#/components/parameters/Session" }, { "$ref": "#/components/parameters/IO" }],
              "put": {
                "operationId": "initializeChannel",
                "summary": "Initialize a channel for direct writes: a token for this one channel and where to write (S2 REST)",
                "responses": {
                  "202": {
                    "description": "Direct-write settings in the X-S2-* headers",
                    "headers": {
                      "X-S2-Access-Token": { "schema": { "type": "string" }, "description": "Bearer token for this channel only; expires" },
                      "X-S2-Stream-Name": { "schema": { "type": "string" } },
                      "X-S2-Basin": { "schema": { "type": "string" } },
                      "X-S2-Endpoint": { "schema": { "type": "string" }, "description": "{public URL}/realtime/s2/v1: the S2 routes are under it, as an S2 client expects" },
                      "X-S2-Flush-Interval-Ms": { "schema": { "type": "integer" } },
                      "X-S2-Max-Retries": { "schema": { "type": "integer" } }
                    },
                    "content": { "application/json": { "schema": { "type": "object", "properties": { "version": { "const": "v2" } } } } }
                  },
                  "400": { "$ref": "#/components/responses/BadRequest" },
                  "401": { "$ref": "#/components/responses/Unauthorized" },
                  "403": { "$ref": "#/components/responses/Forbidden" },
                  "404": { "$ref": "#/components/responses/NotFound" }
                }
              },
              "get": {
                "operationId": "subscribeChannel",
                "summary": "Server-Sent Events: replay from the start or after Last-Event-ID, then follow live",
                "parameters": [
                  { "name": "Last-Event-ID", "in": "header", "schema": { "type": "string" }, "description": "N or N,count,bytes; negative = from the start; past the end = the end" },
                  { "name": "Timeout-Seconds", "in": "header", "schema": { "type": "integer", "minimum": 1, "maximum": 600, "default": 60 }, "description": "End after this long idle at the tail" }
                ],
                "responses": {
                  "200": { "description": "event: batch (data {records:[{seq_num,timestamp,body,headers?}]}, id = last seq_num) and event: ping", "headers": { "X-Session-Id": { "schema": { "type": "string" }, "description": "The session the name led to (absent when subscribed before it existed)" }, "X-Stream-Version": { "schema": { "const": "v2" } } }, "content": { "text/event-stream": { "schema": { "$ref": "#/components/schemas/ServerSentEvent" } } } },
                  "400": { "$ref": "#/components/responses/BadRequest" },
                  "401": { "$ref": "#/components/responses/Unauthorized" },
                  "403": { "$ref": "#/components/responses/Forbidden" },
                  "404": { "$ref": "#/components/responses/NotFound" }
                }
              },
              "head": {
                "operationId": "channelTail",
                "summary": "The channel's last sequence number in X-Last-Seq-Num (-1 when empty)",
                "responses": {
                  "200": { "description": "Tail position", "headers": { "X-Last-Seq-Num": { "schema": { "type": "integer" } } } },
                  "400": { "description": "A bad channel (io other than out or in) or session name; a HEAD answer has no body" },
                  "401": { "$ref": "#/components/responses/Unauthorized" },
                  "403": { "$ref": "#/components/responses/Forbidden" },
                  "404": { "$ref": "#/components/responses/NotFound" }
                }
              }
            },
            "/realtime/v1/sessions/{session}/{io}/append": {
              "parameters": [{ "$ref": "#/components/parameters/Session" }, { "$ref": "#/components/parameters/IO" }],
              "post": {
                "operationId": "appendRecord",
                "summary": "Append the raw body (UTF-8 text, at most 524,288 bytes) as one record; 200 once durable",
                "parameters": [
                  { "name": "X-Part-Id", "in": "header", "schema": { "type": "string", "minLength": 1, "maxLength": 256 }, "description": "Idempotency key for the life of the session" }
                ],
                "requestBody": { "required": true, "description": "UTF-8 text of at most 524,288 bytes (413 beyond; 400 when not UTF-8)", "content": { "*/*": { "schema": { "type": "string" } } } },
                "responses": {
                  "200": { "description": "Stored", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/AppendResult" } } } },
                  "400": { "description": "Closed or expired session (`ok: false`), or a bad header or body (`error` only)", "content": { "application/json": { "schema": { "anyOf": [{ "$ref": "#/components/schemas/AppendResult" }, { "$ref": "#/components/schemas/Error" }] } } } },
                  "401": { "$ref": "#/components/responses/Unauthorized" },
                  "403": { "$ref": "#/components/responses/Forbidden" },
                  "404": { "$ref": "#/components/responses/NotFound" },
                  "413": { "$ref": "#/components/responses/TooLarge" }
                }
              }
            },
            "/realtime/s2/v1/streams/{stream}/records": {
              "parameters": [{ "$ref": "#/components/parameters/Stream" }],
              "post": {
                "operationId": "s2Append",
                "summary": "S2 append (JSON), with the channel token from PUT; 400 once the session is closed or expired",
                "security": [{ "channelToken": [] }],
                "parameters": [{ "$ref": "#/components/parameters/S2Format" }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["records"], "properties": { "records": { "type": "array", "minItems": 1, "maxItems": 1000, "items": { "type": "object", "properties": { "body": { "type": "string" }, "headers": { "type": "array", "items": { "type": "array", "minItems": 2, "maxItems": 2, "items": { "type": "string" } } } } } }, "match_seq_num": { "type": "integer", "minimum": 0 }, "fencing_token": { "type": "string", "maxLength": 0, "description": "Only the empty token (fencing is not supported)" } } } } } },
                "responses": {
                  "200": { "description": "AppendAck {start, end, tail}", "content": { "application/json": { "schema": { "type": "object" } } } },
                  "400": { "$ref": "#/components/responses/S2Error" },
                  "401": { "$ref": "#/components/responses/S2Error" },
                  "403": { "$ref": "#/components/responses/S2Error" },
                  "412": { "description": "match_seq_num did not match", "content": { "application/json": { "schema": { "type": "object", "properties": { "seq_num_mismatch": { "type": "integer" } } } } } },
                  "415": { "$ref": "#/components/responses/S2Error" },
                  "422": { "$ref": "#/components/responses/S2Error" }
                }
              },
              "get": {
                "operationId": "s2Read",
                "summary": "S2 read: JSON, or SSE with Accept: text/event-stream",
                "security": [{ "channelToken": [] }],
                "parameters": [
                  { "name": "seq_num", "in": "query", "schema": { "type": "integer", "minimum": 0 } },
                  { "name": "tail_offset", "in": "query", "schema": { "type": "integer", "minimum": 0 } },
                  { "name": "timestamp", "in": "query", "schema": { "type": "integer", "minimum": 0 }, "description": "Start at the first record stored at or after this epoch ms" },
                  { "name": "bytes", "in": "query", "schema": { "type": "integer", "minimum": 0 }, "description": "At most this many metered bytes of records" },
                  { "name": "until", "in": "query", "schema": { "type": "integer", "minimum": 0 }, "description": "Only records stored before this epoch ms" },
                  { "name": "count", "in": "query", "schema": { "type": "integer", "minimum": 0 } },
                  { "name": "wait", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 4294967295 }, "description": "Seconds to wait for records (a unary read at most 60); default 0 when count, bytes or until is given, else an SSE read follows until the client leaves" },
                  { "name": "clamp", "in": "query", "schema": { "type": "boolean" } },
                  { "$ref": "#/components/parameters/S2Format" }
                ],
                "responses": {
                  "200": { "description": "ReadBatch {records, tail}, or an event stream", "content": { "application/json": { "schema": { "type": "object" } }, "text/event-stream": { "schema": { "$ref": "#/components/schemas/ServerSentEvent" } } } },
                  "400": { "$ref": "#/components/responses/S2Error" },
                  "401": { "$ref": "#/components/responses/S2Error" },
                  "403": { "$ref": "#/components/responses/S2Error" },
                  "406": { "$ref": "#/components/responses/S2Error" },
                  "416": { "description": "Start beyond the tail (without clamp)", "content": { "application/json": { "schema": { "type": "object" } } } },
                  "422": { "$ref": "#/components/responses/S2Error" }
                }
              }
            },
            "/realtime/s2/v1/streams/{stream}/records/tail": {
              "parameters": [{ "$ref": "#/components/parameters/Stream" }],
              "get": {
                "operationId": "s2CheckTail",
                "summary": "S2 check-tail: {tail: {seq_num, timestamp}}",
                "security": [{ "channelToken": [] }],
                "responses": {
                  "200": { "description": "The tail", "content": { "application/json": { "schema": { "type": "object" } } } },
                  "401": { "$ref": "#/components/responses/S2Error" },
                  "403": { "$ref": "#/components/responses/S2Error" }
                }
              }
            },
            "/api/v1/runs/{run}/session-streams/wait": {
              "parameters": [{ "name": "run", "in": "path", "required": true, "description": "The run's friendlyId", "schema": { "type": "string", "minLength": 1, "maxLength": 256 } }],
              "post": {
                "operationId": "waitForSessionStream",
                "summary": "Create a waitpoint completed by the next record on a session channel (secret key only)",
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/WaitForSessionStream" } } } },
                "responses": {
                  "200": { "description": "The waitpoint", "content": { "application/json": { "schema": { "type": "object", "required": ["waitpointId", "isCached"], "properties": { "waitpointId": { "type": "string" }, "isCached": { "type": "boolean" } } } } } },
                  "400": { "$ref": "#/components/responses/BadRequest" },
                  "401": { "$ref": "#/components/responses/Unauthorized" },
                  "403": { "$ref": "#/components/responses/Forbidden" },
                  "404": { "$ref": "#/components/responses/NotFound" },
                  "413": { "$ref": "#/components/responses/TooLarge" }
                }
              }
            },
            "/api/v1/waitpoints/{waitpoint}": {
              "parameters": [{ "$ref": "#/components/parameters/Waitpoint" }],
              "get": {
                "operationId": "retrieveWaitpoint",
                "summary": "A waitpoint: status, output, timestamps (secret key only)",
                "responses": {
                  "200": { "description": "The waitpoint", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Waitpoint" } } } },
                  "401": { "$ref": "#/components/responses/Unauthorized" },
                  "403": { "$ref": "#/components/responses/Forbidden" },
                  "404": { "$ref": "#/components/responses/NotFound" }
                }
              }
            },
            "/api/v1/waitpoints/{waitpoint}/wait": {
              "parameters": [{ "$ref": "#/components/parameters/Waitpoint" }],
              "get": {
                "operationId": "waitForWaitpoint",
                "summary": "Long-poll: answers as soon as the waitpoint settles, or after timeout seconds",
                "parameters": [{ "name": "timeout", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 600, "default": 30 } }],
                "responses": {
                  "200": { "description": "The waitpoint (still PENDING when the poll timed out)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Waitpoint" } } } },
                  "400": { "$ref": "#/components/responses/BadRequest" },
                  "401": { "$ref": "#/components/responses/Unauthorized" },
                  "403": { "$ref": "#/components/responses/Forbidden" },
                  "404": { "$ref": "#/components/responses/NotFound" }
                }
              }
            },
            "/api/v1/admin/environments": {
              "post": {
                "operationId": "createEnvironment",
                "summary": "Create an environment (and its organization and project when missing) and return its secret key; idempotent by names. Needs the operator's SESSIONS_ADMIN_TOKEN; 403 while that is unset",
                "security": [{ "adminToken": [] }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/CreateEnvironment" } } } },
                "responses": {
                  "200": { "description": "The environment and its secret key", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Environment" } } } },
                  "400": { "$ref": "#/components/responses/BadRequest" },
                  "401": { "$ref": "#/components/responses/Unauthorized" },
                  "403": { "$ref": "#/components/responses/Forbidden" },
                  "413": { "$ref": "#/components/responses/TooLarge" }
                }
              }
            },
            "/api/openapi.json": {
              "get": {
                "operationId": "openAPIDocument",
                "summary": "This document",
                "security": [],
                "responses": { "200": { "description": "The OpenAPI document", "content": { "application/json": { "schema": { "type": "object" } } } } }
              }
            }
          },
          "components": {
            "securitySchemes": {
              "bearer": { "type": "http", "scheme": "bearer", "description": "An environment's secret key (tr_dev_…, tr_stg_…, tr_prod_…, tr_prev_…) or a public access token (HS256 JWT)." },
              "adminToken": { "type": "http", "scheme": "bearer", "description": "The operator's SESSIONS_ADMIN_TOKEN (admin routes only)." },
              "channelToken": { "type": "http", "scheme": "bearer", "description": "The X-S2-Access-Token from PUT /realtime/v1/sessions/{session}/{io}: this one channel, until it expires." }
            },
            "parameters": {
              "Session": { "name": "session", "in": "path", "required": true, "description": "friendlyId (session_…) or externalId", "schema": { "type": "string", "minLength": 1, "maxLength": 256 } },
              "Waitpoint": { "name": "waitpoint", "in": "path", "required": true, "description": "waitpoint_…", "schema": { "type": "string" } },
              "IO": { "name": "io", "in": "path", "required": true, "description": "The channel: out (task → clients) or in (clients → task)", "schema": { "enum": ["out", "in"] } },
              "S2Format": { "name": "S2-Format", "in": "header", "schema": { "enum": ["raw", "json", "base64", "json-binsafe"] }, "description": "raw (default): bodies and headers as text (bytes that are not UTF-8 read as U+FFFD); base64: as base64, so any bytes fit" },
              "Stream": { "name": "stream", "in": "path", "required": true, "description": "X-S2-Stream-Name, percent-encoded (sessions%2F{friendlyId}%2F{io})", "schema": { "type": "string" } }
            },
            "schemas": {
              "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } },
              "Session": {
                "type": "object",
                "required": ["id", "externalId", "type", "taskIdentifier", "tags", "metadata", "closedAt", "closedReason", "expiresAt", "createdAt", "updatedAt", "status"],
                "properties": {
                  "id": { "type": "string", "pattern": "^session_" },
                  "externalId": { "type": ["string", "null"] },
                  "type": { "type": "string" },
                  "taskIdentifier": { "type": ["string", "null"] },
                  "tags": { "type": "array", "items": { "type": "string" } },
                  "metadata": { "type": ["object", "null"] },
                  "closedAt": { "type": ["string", "null"], "format": "date-time" },
                  "closedReason": { "type": ["string", "null"] },
                  "expiresAt": { "type": ["string", "null"], "format": "date-time" },
                  "createdAt": { "type": "string", "format": "date-time" },
                  "updatedAt": { "type": "string", "format": "date-time" },
                  "status": { "type": "string", "enum": ["ACTIVE", "CLOSED", "EXPIRED"] }
                }
              },
              "CreatedSession": {
                "allOf": [
                  { "$ref": "#/components/schemas/Session" },
                  {
                    "type": "object",
                    "required": ["publicAccessToken", "isCached"],
                    "properties": { "publicAccessToken": { "type": "string" }, "isCached": { "type": "boolean" } }
                  }
                ]
              },
              "CreateSession": {
                "type": "object",
                "required": ["type"],
                "properties": {
                  "type": { "type": "string", "minLength": 1, "maxLength": 64 },
                  "externalId": { "type": ["string", "null"], "minLength": 1, "maxLength": 256, "description": "Trimmed; must not start with session_" },
                  "taskIdentifier": { "type": ["string", "null"], "minLength": 1, "maxLength": 128 },
                  "tags": { "type": "array", "maxItems": 10, "items": { "type": "string", "minLength": 1, "maxLength": 128 } },
                  "metadata": { "type": ["object", "null"], "description": "Any JSON object; the body nests at most 32 levels deep" },
                  "triggerConfig": { "type": ["object", "null"], "description": "Any JSON object; the body nests at most 32 levels deep" },
                  "expiresAt": { "oneOf": [{ "type": "string", "format": "date-time" }, { "type": "integer", "description": "epoch milliseconds" }, { "type": "null" }] }
                }
              },
              "UpdateSession": {
                "type": "object",
                "properties": {
                  "tags": { "type": "array", "maxItems": 10, "items": { "type": "string", "minLength": 1, "maxLength": 128 } },
                  "metadata": { "type": ["object", "null"], "description": "Any JSON object; the body nests at most 32 levels deep" },
                  "externalId": { "type": ["string", "null"], "minLength": 1, "maxLength": 256 }
                }
              },
              "CloseSession": {
                "type": "object",
                "properties": { "reason": { "type": "string", "maxLength": 256 } }
              },
              "WaitForSessionStream": {
                "type": "object",
                "required": ["session", "io"],
                "properties": {
                  "session": { "type": "string", "minLength": 1, "maxLength": 256, "description": "friendlyId or externalId" },
                  "io": { "enum": ["out", "in"] },
                  "timeout": { "type": "string", "description": "ISO-8601 date with a time zone (one already past times out at the next sweep, unless a record is there already), or a duration: 30s, 5m, 2h, 1d, 1w, 1h30m (largest unit first)" },
                  "idempotencyKey": { "type": "string", "minLength": 1, "maxLength": 256 },
                  "idempotencyKeyTTL": { "type": "string", "pattern": "^[0-9]+[smhd]$" },
                  "tags": { "oneOf": [{ "type": "string", "minLength": 1, "maxLength": 128 }, { "type": "array", "maxItems": 10, "items": { "type": "string", "minLength": 1, "maxLength": 128 } }] },
                  "lastSeqNum": { "type": "integer", "minimum": -1, "maximum": 2147483647000000, "description": "The last record the caller saw (a completed waitpoint's output.seqNum); at or past the channel's last record: the next record; absent: only records appended from now on" }
                }
              },
              "Waitpoint": {
                "type": "object",
                "required": ["id", "status", "runId", "session", "io", "tags", "createdAt", "environmentId"],
                "properties": {
                  "id": { "type": "string" },
                  "status": { "enum": ["PENDING", "COMPLETED", "TIMED_OUT"] },
                  "runId": { "type": "string" },
                  "session": { "type": "string" },
                  "io": { "enum": ["out", "in"] },
                  "output": { "type": "object", "properties": { "value": { "type": "string" }, "type": { "type": "string", "description": "application/json; application/octet-stream when value is the base64 of a record that is not text" }, "isError": { "type": "boolean" }, "seqNum": { "type": "integer", "description": "The record that completed it (absent when timed out)" } } },
                  "timeoutAt": { "type": "string", "format": "date-time" },
                  "idempotencyKey": { "type": "string" },
                  "idempotencyKeyExpiresAt": { "type": "string", "format": "date-time" },
                  "tags": { "type": "array", "items": { "type": "string" } },
                  "createdAt": { "type": "string", "format": "date-time" },
                  "completedAt": { "type": "string", "format": "date-time" },
                  "environmentId": { "type": "string" }
                }
              },
              "CreateEnvironment": {
                "type": "object",
                "required": ["organization", "project"],
                "properties": {
                  "organization": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" },
                  "project": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" },
                  "type": { "type": ["string", "null"], "description": "development (default), staging, production or preview, in any letter case" },
                  "slug": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "description": "Default: the type" }
                }
              },
              "Environment": {
                "type": "object",
                "required": ["organizationId", "projectId", "environmentId", "type", "apiKey"],
                "properties": {
                  "organizationId": { "type": "string" },
                  "projectId": { "type": "string" },
                  "environmentId": { "type": "string" },
                  "type": { "enum": ["DEVELOPMENT", "STAGING", "PRODUCTION", "PREVIEW"] },
                  "apiKey": { "type": "string" }
                }
              },
              "ServerSentEvent": {
                "type": "object",
                "description": "One event of the stream (each response is a sequence of them)",
                "properties": {
                  "event": { "type": "string", "description": "batch, ping (S2 reads also error)" },
                  "id": { "type": "string", "description": "The batch's last seq_num (S2 reads: seq_num,count,bytes)" },
                  "data": { "type": "string", "description": "batch: {\"records\":[{\"seq_num\",\"timestamp\",\"body\"}]}; S2 reads end with [DONE]" }
                }
              },
              "AppendResult": {
                "type": "object",
                "required": ["ok"],
                "properties": { "ok": { "type": "boolean" }, "seqNum": { "type": "integer", "minimum": 0 }, "error": { "type": "string" } }
              }
            },
            "responses": {
              "BadRequest": { "description": "Malformed JSON or a field that breaks a rule (named in the message)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
              "Unauthorized": { "description": "Missing, invalid or expired credentials", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
              "Forbidden": { "description": "The token's scopes do not allow this", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
              "NotFound": { "description": "No such session in this environment", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
              "Conflict": { "description": "Create: the externalId's session is closed or expired. PATCH: the new externalId is taken (a closed session can be patched)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
              "TooLarge": { "description": "Body over the limit or without Content-Length", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
              "Unavailable": { "description": "A store the route needs is unreachable; try again after Retry-After", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
              "S2Error": { "description": "S2's error body", "content": { "application/json": { "schema": { "type": "object", "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } } } }
            }
          }
        }
        """#
}
