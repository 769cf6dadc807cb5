using System.Globalization;
using Bursar.Core.Pipeline;

namespace Bursar.Core.Batch;

/// <summary>
/// The batch lever as a stage (<c>batch</c>, after admission, before the provider call): a call marked deferrable by
/// <c>x-bursar-defer: 1h</c> (a delay from <see cref="DeferralOptions.MinDelay"/> to 24 hours) or by its route's
/// <c>Defer</c> is queued as a job (<see cref="IJobQueue"/>) and ends here; the face answers 202 with the job's id. The
/// caches ran before it, so a call they answer is never deferred. A streamed call, or a run's turn, cannot wait: the
/// header refuses it (400 naming the header), a route policy lets it run now.
/// </summary>
public sealed class DeferralStage(IJobQueue queue, DeferralOptions options) : ILeverStage
{
    public const string Header = "x-bursar-defer";

    public string Name => "batch";

    public async ValueTask InvokeAsync(LeverCall call, LeverNext next, CancellationToken cancellationToken)
    {
        var header = call.Tags(Header);
        TimeSpan delay;
        var asked = !string.IsNullOrEmpty(header);
        if (asked)
        {
            if (!TryParseDelay(header!, out delay) || delay < options.MinDelay || delay > DeferralOptions.MaxDelay)
            {
                call.Refuse(LeverRefusal.BadRequest($"The {Header} header must be a delay from {Describe(options.MinDelay)} to 24h such as 1h or 24h, not '{Clip(header!)}'.", Header));
                return;
            }
            if (call.Request.Stream || call.Attribution.RunId is not null)
            {
                call.Refuse(LeverRefusal.BadRequest($"The {Header} header cannot defer a {(call.Request.Stream ? "streamed call (drop \"stream\": true)" : "turn of a run (x-bursar-run)")}: its caller waits for the answer now.", Header));
                return;
            }
        }
        else if (call.Policy?.Defer is { } policy && !call.Request.Stream && call.Attribution.RunId is null)
        {
            delay = policy;
        }
        else
        {
            await next(call, cancellationToken).ConfigureAwait(false);
            return;
        }
        var job = await queue.EnqueueAsync(call, delay, cancellationToken).ConfigureAwait(false);
        if (job is null)
        {
            await next(call, cancellationToken).ConfigureAwait(false);
            return;
        }
        call.DeferredJob = job;
        call.Outcome = "deferred";
        call.StatusCode = 202;
    }

    /// <summary>Reads <c>90s</c>, <c>30m</c>, <c>1h</c>, <c>24h</c>, <c>1d</c> (a number and a unit, nothing else).</summary>
    public static bool TryParseDelay(string text, out TimeSpan delay)
    {
        delay = default;
        var t = text.Trim();
        if (t.Length < 2 || t.Length > 12) return false;
        if (!double.TryParse(t.AsSpan(0, t.Length - 1), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var n) || n <= 0 || !double.IsFinite(n)) return false;
        delay = char.ToLowerInvariant(t[^1]) switch
        {
            's' => TimeSpan.FromSeconds(n),
            'm' => TimeSpan.FromMinutes(n),
            'h' => TimeSpan.FromHours(Math.Min(n, 1e6)),
            'd' => TimeSpan.FromDays(Math.Min(n, 1e4)),
            _ => TimeSpan.MinValue,
        };
        return delay > TimeSpan.Zero;
    }

    private static string Describe(TimeSpan t) => t.TotalHours >= 1 && t.TotalHours == Math.Floor(t.TotalHours) ? $"{t.TotalHours:0}h" : t.TotalMinutes >= 1 ? $"{t.TotalMinutes:0.#}m" : $"{t.TotalSeconds:0.#}s";

    private static string Clip(string s) => s.Length <= 40 ? s : s[..40] + "…";
}
