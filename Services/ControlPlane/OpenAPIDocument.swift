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
            "description": "Durable, bidirectional streams for AI agents and long-running tasks. Authenticate with `Authorization: Bearer <secret key or public access token>`. Errors are `{\"error\": \"<message>\"}`; every response carries `X-Request-Id`."
          },
          "servers": [{ "url": "http://127.0.0.1:8080" }],
          "security": [{ "bearer": [] }],
          "paths": {
            "/api/v1/sessions": {
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
              "bearer": { "type": "http", "scheme": "bearer", "description": "An environment's secret key (tr_dev_…, tr_stg_…, tr_prod_…, tr_prev_…) or a public access token (HS256 JWT)." }
            },
            "parameters": {
              "Session": { "name": "session", "in": "path", "required": true, "description": "friendlyId (session_…) or externalId", "schema": { "type": "string", "minLength": 1, "maxLength": 256 } }
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
                  "metadata": { "type": ["object", "null"] },
                  "triggerConfig": { "type": ["object", "null"] },
                  "expiresAt": { "oneOf": [{ "type": "string", "format": "date-time" }, { "type": "integer", "description": "epoch milliseconds" }, { "type": "null" }] }
                }
              },
              "UpdateSession": {
                "type": "object",
                "properties": {
                  "tags": { "type": "array", "maxItems": 10, "items": { "type": "string", "minLength": 1, "maxLength": 128 } },
                  "metadata": { "type": ["object", "null"] },
                  "externalId": { "type": ["string", "null"], "minLength": 1, "maxLength": 256 }
                }
              },
              "CloseSession": {
                "type": "object",
                "properties": { "reason": { "type": "string", "maxLength": 256 } }
              }
            },
            "responses": {
              "BadRequest": { "description": "Malformed JSON or a field that breaks a rule (named in the message)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
              "Unauthorized": { "description": "Missing, invalid or expired credentials", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
              "Forbidden": { "description": "The token's scopes do not allow this", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
              "NotFound": { "description": "No such session in this environment", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
              "Conflict": { "description": "Closed or expired session, or externalId taken", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
              "TooLarge": { "description": "Body over the limit or without Content-Length", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
          }
        }
        """#
}
