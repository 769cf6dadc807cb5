namespace Bursar.Core.Batch;

/// <summary>
/// The <c>Bursar:Webhooks</c> section: an optional signed webhook per virtual key announcing that a deferred job has ended
/// (<c>Bursar:Webhooks:Keys:{keyId}:Url</c> and <c>:Secret</c>). Each delivery is a POST of the job's status, signed with
/// HMAC-SHA256 in <see cref="SignatureHeader"/>, retried with exponential backoff and kept on disk until delivered, so a
/// restart loses none. Validated once at start.
/// </summary>
public sealed class WebhookOptions
{
    public const string Section = "Bursar:Webhooks";

    /// <summary>
    /// The signature header: <c>t=&lt;unix seconds&gt;,v1=&lt;hex HMAC-SHA256 of "t.body" with the key's secret&gt;</c>. A receiver
    /// recomputes it over the raw body and compares in constant time, and refuses a <c>t</c> too far from its clock (replays).
    /// </summary>
    public const string SignatureHeader = "x-bursar-signature";

    /// <summary>Webhook endpoints by virtual key id. Default: none (no key has a webhook).</summary>
    public Dictionary<string, WebhookEndpoint> Keys { get; set; } = new(StringComparer.Ordinal);

    /// <summary>Deliveries tried per job before it is given up (kept in the <c>webhooks/failed</c> folder and logged). Default 8.</summary>
    public int MaxAttempts { get; set; } = 8;

    /// <summary>The wait before the first retry; each further retry waits twice as long, up to <see cref="MaxRetryDelay"/>. Default 2 seconds.</summary>
    public TimeSpan FirstRetryDelay { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>The longest wait between two tries. Default 10 minutes.</summary>
    public TimeSpan MaxRetryDelay { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>How often the dispatcher looks for deliveries that are due. Default 1 second.</summary>
    public TimeSpan DispatchInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>How long one delivery may take before it counts as failed. Default 10 seconds.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(10);

    public void Validate()
    {
        foreach (var (key, e) in Keys)
        {
            if (!Uri.TryCreate(e.Url, UriKind.Absolute, out var u) || u.Scheme is not ("https" or "http"))
                throw new InvalidOperationException($"{Section}:Keys:{key}:Url must be an absolute http(s) URL, not '{e.Url}'.");
            if (e.Secret is not { Length: >= 16 })
                throw new InvalidOperationException($"{Section}:Keys:{key}:Secret must be at least 16 characters (it signs every delivery).");
        }
        if (MaxAttempts is < 1 or > 100) throw new InvalidOperationException($"{Section}:MaxAttempts must be 1-100, not {MaxAttempts}.");
        if (FirstRetryDelay <= TimeSpan.Zero || FirstRetryDelay > MaxRetryDelay)
            throw new InvalidOperationException($"{Section}:FirstRetryDelay must be more than zero and at most MaxRetryDelay ({MaxRetryDelay}), not {FirstRetryDelay}.");
        if (MaxRetryDelay > TimeSpan.FromHours(24)) throw new InvalidOperationException($"{Section}:MaxRetryDelay must be at most 24 hours, not {MaxRetryDelay}.");
        if (DispatchInterval < TimeSpan.FromMilliseconds(10) || DispatchInterval > TimeSpan.FromMinutes(10))
            throw new InvalidOperationException($"{Section}:DispatchInterval must be from 10 ms to 10 minutes, not {DispatchInterval}.");
        if (Timeout < TimeSpan.FromMilliseconds(100) || Timeout > TimeSpan.FromMinutes(5))
            throw new InvalidOperationException($"{Section}:Timeout must be from 100 ms to 5 minutes, not {Timeout}.");
    }
}

/// <summary>One key's webhook: where deliveries go and the secret that signs them.</summary>
public sealed class WebhookEndpoint
{
    public string Url { get; set; } = "";
    public string Secret { get; set; } = "";
}
