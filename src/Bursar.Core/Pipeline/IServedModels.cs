namespace Bursar.Core.Pipeline;

/// <summary>Which models the face can serve: the gateway's deployments, or (in the .NET library) whatever the inner client takes.</summary>
public interface IServedModels
{
    bool Serves(string model);

    /// <summary>The message of a model-not-found refusal: what is served instead and how to add the model.</summary>
    string NotServed(string model);

    /// <summary>The null object: every model is served (the inner client answers for unknown ones).</summary>
    public static IServedModels Any { get; } = new AnyModel();

    private sealed class AnyModel : IServedModels
    {
        public bool Serves(string model) => true;
        public string NotServed(string model) => $"The model '{model}' is not served.";
    }
}
