import { defineConfig } from 'vite';

// The board is embedded in the viber binary from `dist/` (rust-embed). Hashed files go under
// `dist/assets/`, which the gateway serves with an immutable cache header.
export default defineConfig({
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    target: 'es2022',
    sourcemap: false,
    reportCompressedSize: true,
  },
  server: {
    // `npm run dev` proxies the API to a local gateway.
    proxy: { '/api': 'http://127.0.0.1:7391' },
  },
});
