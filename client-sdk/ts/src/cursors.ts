// Where a session keeps its per-conversation cursors (the highest seq handed to the
// app), so that a restart resyncs from where it was instead of from the start.

export interface CursorStore {
  /** Every stored cursor. */
  load(): Promise<Map<string, bigint>>;
  /** Records `seq` for `conversation` (only ever higher). */
  save(conversation: string, seq: bigint): void;
}

/** Cursors for as long as the page (or process) lives: tests, throwaway clients. */
export class MemoryCursors implements CursorStore {
  readonly cursors = new Map<string, bigint>();

  async load(): Promise<Map<string, bigint>> {
    return new Map(this.cursors);
  }

  save(conversation: string, seq: bigint): void {
    if (seq > (this.cursors.get(conversation) ?? 0n)) this.cursors.set(conversation, seq);
  }
}

/** Cursors in the browser's IndexedDB (database `name`, one store), written behind. */
export class IndexedDbCursors implements CursorStore {
  private db?: Promise<IDBDatabase>;

  constructor(private readonly name = "courier-cursors") {}

  private open(): Promise<IDBDatabase> {
    this.db ??= new Promise((resolve, reject) => {
      const request = indexedDB.open(this.name, 1);
      request.onupgradeneeded = () => request.result.createObjectStore("cursors");
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    return this.db;
  }

  async load(): Promise<Map<string, bigint>> {
    const db = await this.open();
    return new Promise((resolve, reject) => {
      const out = new Map<string, bigint>();
      const request = db.transaction("cursors").objectStore("cursors").openCursor();
      request.onsuccess = () => {
        const c = request.result;
        if (!c) return resolve(out);
        out.set(String(c.key), BigInt(c.value as string));
        c.continue();
      };
      request.onerror = () => reject(request.error);
    });
  }

  save(conversation: string, seq: bigint): void {
    void this.open().then((db) => {
      const store = db.transaction("cursors", "readwrite").objectStore("cursors");
      const read = store.get(conversation);
      read.onsuccess = () => {
        if (read.result === undefined || BigInt(read.result as string) < seq) store.put(seq.toString(), conversation);
      };
    });
  }
}
