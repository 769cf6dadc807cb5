using Bursar.Core.Batch;
using Bursar.Core.Pipeline;
using Bursar.Gateway.Proxy;
using Bursar.Providers.Dialects;
using Bursar.Providers.Upstream;

namespace Bursar.Gateway.Batch;

/// <summary>
/// The gateway's deferral queue: a deferred call becomes a durable job holding the bytes that would have gone upstream
/// (the stages' edits applied), for the deployment and model the route chose. A call whose model another dialect's
/// deployment serves is not deferred (its answer would need translating back): it runs now.
/// </summary>
public sealed class JobQueue(IJobStore jobs, UpstreamRegistry registry, TimeProvider time) : IJobQueue
{
    public async ValueTask<string?> EnqueueAsync(LeverCall call, TimeSpan delay, CancellationToken cancellationToken)
    {
        if (call.Host is not GatewayExchange x || registry.Find(call.Model) is not { } d || d.Dialect != x.Dialect) return null;
        var (body, _) = UpstreamCall.Build(call, x, d, call.Model, 0, cancellationToken);
        var now = time.GetUtcNow();
        var a = call.Attribution;
        var job = new DeferredJob
        {
            Id = "job_" + Guid.CreateVersion7(now).ToString("N"), KeyId = call.Key.Id, Team = a.Team, Customer = a.Customer, Feature = a.Feature, Task = a.Task,
            Template = a.Template, Route = call.Route, Dialect = x.Dialect.Name(), Deployment = d.Name, Model = call.Model, RequestedModel = call.RequestedModel,
            Body = body.ToArray(), CreatedAt = now, Deadline = now + delay, WorstUsd = call.Admitted.WorstCaseUsd / 2, UpdatedAt = now,
        };
        await jobs.EnqueueAsync(job, cancellationToken).ConfigureAwait(false);
        return job.Id;
    }
}
