// Vite builds the page into dist/ with relative asset paths, so any static server can serve it from any path.
// Everything (livekit-client included) is bundled: the page loads nothing from a CDN.
import { defineConfig } from "vite";

export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
    // livekit-client alone is ~500 kB minified; one chunk is simpler to serve and cache than several.
    chunkSizeWarningLimit: 1500,
  },
  server: { port: 5173, strictPort: true },
});
