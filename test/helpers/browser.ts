// Test helper: Debian's headless Chromium (scripts/bootstrap.sh installs it), driven by playwright-core over the
// DevTools protocol, in a fresh profile directory that close() removes. The flags keep Chromium off the network:
// without them it keeps calling home (updates, sync, field trials), which this closed network would see as noise.
import * as fs from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';
import { chromium, type BrowserContext } from 'playwright-core';

export const CHROMIUM = process.env.NETTALLY_CHROMIUM ?? '/usr/bin/chromium';

const QUIET_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-default-apps', '--disable-extensions', '--metrics-recording-only'];

export interface TestBrowser {
  context: BrowserContext;
  close(): Promise<void>;
}

export async function startBrowser(viewport = { width: 1400, height: 1000 }): Promise<TestBrowser> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: run scripts/bootstrap.sh (installs Debian's chromium) or set NETTALLY_CHROMIUM`);
  const profile = fs.mkdtempSync(join(tmpdir(), 'nettally-chromium-'));
  try {
    const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: QUIET_FLAGS, viewport, acceptDownloads: true, timeout: 60_000 });
    return {
      context,
      async close() {
        await context.close().catch(() => undefined);
        fs.rmSync(profile, { recursive: true, force: true });
      },
    };
  } catch (e) {
    fs.rmSync(profile, { recursive: true, force: true });
    throw e;
  }
}
