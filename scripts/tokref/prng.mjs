// mulberry32: the small deterministic PRNG the text-set generators share, so
// that a text set is the same on every machine and Node version.
//   const { rand, ri } = mulberry32(seed);  rand() in [0, 1), ri(a, b) in [a, b]
export function mulberry32(seed) {
  let state = seed;
  function rand() {
    state |= 0;
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  const ri = (a, b) => a + Math.floor(rand() * (b - a + 1)); // inclusive
  return { rand, ri };
}
