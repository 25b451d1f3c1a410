// Prints one closing line from jest's JSON results and fails when a test failed, was skipped, or none ran.
const fs = require('fs');

const file = process.argv[2];
let r;
try {
  r = JSON.parse(fs.readFileSync(file, 'utf8'));
} catch (e) {
  console.error(`test-summary: cannot read jest results ${file}: ${e.message}`);
  process.exit(1);
}
const skipped = r.numPendingTests + r.numTodoTests;
const failedSuites = r.numFailedTestSuites + (r.numRuntimeErrorTestSuites || 0);
console.log(`\ntests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
if (skipped > 0) console.error('test-summary: skipped tests are failures here: CI must run every test');
if (failedSuites > 0) console.error(`test-summary: ${failedSuites} test suite(s) failed to run`);
if (r.numTotalTests === 0) console.error('test-summary: no test ran');
process.exit(r.numFailedTests === 0 && skipped === 0 && failedSuites === 0 && r.numTotalTests > 0 ? 0 : 1);
