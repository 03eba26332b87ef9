// Module hooks (see register.js): `cronwerk:task/NAME@VERSION` resolves to a
// module whose exports are cronwerk-testing.js's `interfaces.NAME`.

import { interfaces } from './cronwerk-testing.js';

const KIT = new URL('./cronwerk-testing.js', import.meta.url).href;
const PREFIX = 'cronwerk:task/';

export async function resolve(specifier, context, nextResolve) {
  if (!specifier.startsWith(PREFIX)) {
    return nextResolve(specifier, context);
  }
  const name = specifier.slice(PREFIX.length).split('@')[0];
  if (!Object.hasOwn(interfaces, name)) {
    throw new Error(
      `${specifier}: cronwerk has no interface '${name}' (it has ${Object.keys(interfaces).join(', ')})`,
    );
  }
  return { url: `cronwerk-test:${name}`, shortCircuit: true };
}

export async function load(url, context, nextLoad) {
  if (!url.startsWith('cronwerk-test:')) {
    return nextLoad(url, context);
  }
  const name = url.slice('cronwerk-test:'.length);
  const names = Object.keys(interfaces[name]).join(', ');
  const source = `import { interfaces } from ${JSON.stringify(KIT)};\nexport const { ${names} } = interfaces.${name};\n`;
  return { format: 'module', source, shortCircuit: true };
}
