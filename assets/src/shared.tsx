// Shared credentials on the Settings page: variables, secrets and secret files every
// environment inherits unless it sets the same name itself (`viber config set`).

import { useEffect, useState } from 'preact/hooks';
import { api } from './api';
import type * as P from './protocol.gen';
import { errorText, toast } from './store';
import { ErrorBox, RelTime } from './ui';

type Kind = 'env' | 'var' | 'file';

export function SharedCredentials() {
  const [config, setConfig] = useState<P.SharedConfig | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [kind, setKind] = useState<Kind>('env');
  const [name, setName] = useState('');
  const [value, setValue] = useState('');
  const [setupOnly, setSetupOnly] = useState(false);
  useEffect(() => {
    api.sharedConfig().then(setConfig, (e) => setError(errorText(e)));
  }, []);
  const save = async () => {
    setError(null);
    try {
      const body: P.SetShared = { value };
      if (kind !== 'var' && setupOnly) body.scope = 'setup';
      setConfig(await api.setShared(`${kind}.${name.trim()}`, body));
      setName('');
      setValue('');
      toast('Saved: every environment that does not set it itself now has it');
    } catch (e) {
      setError(errorText(e));
    }
  };
  const remove = async (key: string) => {
    if (!confirm(`Remove ${key}? Environments no longer inherit it.`)) return;
    try {
      await api.deleteShared(key);
      setConfig(await api.sharedConfig());
    } catch (e) {
      toast(`Remove: ${errorText(e)}`);
    }
  };
  const rows: { key: string; value: string; note: string; updatedAt?: string }[] = config
    ? [
        ...Object.entries(config.vars).map(([k, v]) => ({ key: `var.${k}`, value: v, note: 'variable' })),
        ...Object.entries(config.secrets).map(([k, s]) => ({
          key: s.file ? `file.${s.file}` : `env.${k}`,
          value: s.value,
          note: `${s.file ? 'secret file' : 'secret'}${s.scope === 'setup' ? ', setup only' : ''}`,
          updatedAt: s.updatedAt,
        })),
      ]
    : [];
  return (
    <section class="card" data-shared>
      <h2>Shared credentials</h2>
      <p class="muted-text">
        Every environment inherits these unless it sets the same name itself. Secrets are write-only: stored encrypted, shown
        masked, redacted from output. A secret file is written (0600) at its path in the agent CLIs' home.
      </p>
      <ErrorBox message={error} />
      {rows.length > 0 && (
        <ul class="plain shared-list">
          {rows.map((r) => (
            <li key={r.key} data-shared-key={r.key}>
              <code>{r.key}</code> <span class="mono">{r.value}</span> <span class="muted-text small">{r.note}</span>
              {r.updatedAt && (
                <span class="muted-text small">
                  {' '}
                  · <RelTime iso={r.updatedAt} />
                </span>
              )}{' '}
              <button class="small danger" aria-label={`Remove ${r.key}`} onClick={() => remove(r.key)}>
                Remove
              </button>
            </li>
          ))}
        </ul>
      )}
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          save();
        }}
      >
        <label>
          Kind
          <select value={kind} onChange={(e) => setKind((e.target as HTMLSelectElement).value as Kind)}>
            <option value="env">secret variable</option>
            <option value="file">secret file</option>
            <option value="var">variable</option>
          </select>
        </label>
        <label>
          {kind === 'file' ? 'Path in the agent home' : 'Variable name'}
          <input
            value={name}
            required
            placeholder={kind === 'file' ? '.ssh/id_ed25519' : 'ANTHROPIC_API_KEY'}
            onInput={(e) => setName((e.target as HTMLInputElement).value)}
          />
        </label>
        <label>
          Value
          {kind === 'file' ? (
            <textarea rows={2} value={value} required onInput={(e) => setValue((e.target as HTMLTextAreaElement).value)} />
          ) : kind === 'var' ? (
            <input value={value} required onInput={(e) => setValue((e.target as HTMLInputElement).value)} />
          ) : (
            <input
              type="password"
              autocomplete="new-password"
              value={value}
              required
              onInput={(e) => setValue((e.target as HTMLInputElement).value)}
            />
          )}
        </label>
        {kind !== 'var' && (
          <label class="check">
            <input type="checkbox" checked={setupOnly} onChange={(e) => setSetupOnly((e.target as HTMLInputElement).checked)} /> setup only
          </label>
        )}
        <button class="primary" type="submit">
          Save
        </button>
      </form>
    </section>
  );
}
