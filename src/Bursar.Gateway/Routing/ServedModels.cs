using Bursar.Core.Pipeline;
using Bursar.Providers.Upstream;

namespace Bursar.Gateway.Routing;

/// <summary>The models the gateway serves: those its deployments list.</summary>
public sealed class DeploymentModels(UpstreamRegistry registry) : IServedModels
{
    public bool Serves(string model) => registry.Find(model) is not null;

    public string NotServed(string model) =>
        $"The model '{model}' is not served by any configured deployment (configured: {string.Join(", ", registry.Deployments.Select(d => $"{d.Name} [{string.Join(' ', d.Options.Models)}]"))}). Add it to Bursar:Providers:Deployments:<name>:Models.";
}
