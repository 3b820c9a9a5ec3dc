// GET /docs: Swagger UI (served by the service itself) on this service's /openapi.json. With
// an API key set, the document itself needs the key: it is asked for as on the live page and
// sent as X-API-Key with every "Try it out" request.
import {KeyRefused, askForKey, call, headers, showMessage} from "./client.js";

async function loadDocument() {
  for (;;) {
    try {
      return await call("/openapi.json");
    } catch (error) {
      if (!(error instanceof KeyRefused)) throw error;
      await askForKey();
    }
  }
}

function withKey(request) {
  const sent = Object.keys(request.headers).map((name) => name.toLowerCase());
  if (!sent.includes("x-api-key")) Object.assign(request.headers, headers());
  return request;
}

try {
  window.ui = SwaggerUIBundle({
    spec: await loadDocument(),
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    validatorUrl: null,  // Swagger UI would otherwise send the document to an online validator
    requestInterceptor: withKey,
  });
} catch (error) {
  showMessage(`The API description could not be loaded: ${error.message}`);
}
