// COMPILE-CHECK STUBS, NOT UNITY. The few UnityEngine/UnityEditor types and members that
// UnityProject/Assets/CoinScale uses, with empty bodies, so that tests/test_unity_csharp.py can
// compile the Unity-side C# with Mono's mcs on machines without Unity and catch syntax and type
// errors. They mirror the Unity 2022.3 API signatures as used; they say nothing about behaviour.
// When the Unity-side code starts using another engine API, add it here with Unity's signature.
// This folder is outside Assets/, so Unity never sees it.
using System;
namespace UnityEngine {
  public class Object { public string name; public static void DontDestroyOnLoad(Object o){} public static void Destroy(Object o){} public static void DestroyImmediate(Object o){}
    public static T Instantiate<T>(T o, Transform parent, bool worldStays) where T: Object { return o; }
    public static T FindObjectOfType<T>() where T: Object { return null; } }
  public class Component : Object { public Transform transform; public GameObject gameObject; }
  public class Behaviour : Component { public bool enabled; }
  public class MonoBehaviour : Behaviour {}
  public class ScriptableObject : Object { public static T CreateInstance<T>() where T: ScriptableObject { return null; } }
  public sealed class GameObject : Object { public GameObject(string n){} public Transform transform; public T AddComponent<T>() where T: Component { return null; } public T[] GetComponentsInChildren<T>() { return null; } }
  public class Transform : Component { public void SetParent(Transform p, bool w){} public Vector3 localPosition; public Quaternion localRotation; public Vector3 localScale; public Quaternion rotation; }
  public enum CameraClearFlags { SolidColor }
  public sealed class Camera : Behaviour { public bool orthographic; public CameraClearFlags clearFlags; public Color backgroundColor; public float nearClipPlane, farClipPlane, orthographicSize, aspect; public bool allowHDR, allowMSAA; public RenderTexture targetTexture; public void Render(){} }
  public enum LightType { Directional } public enum LightShadows { None }
  public sealed class Light : Behaviour { public LightType type; public LightShadows shadows; public bool useColorTemperature; public float intensity, colorTemperature; public Color color; }
  public class Renderer : Component { public Material sharedMaterial; public Rendering.ShadowCastingMode shadowCastingMode; public bool receiveShadows; public void SetPropertyBlock(MaterialPropertyBlock b){} }
  public sealed class MeshRenderer : Renderer {}
  public sealed class MeshFilter : Component { public Mesh sharedMesh; }
  public sealed class Mesh : Object { public Vector3[] vertices, normals; public Vector2[] uv; public int[] triangles; public void RecalculateBounds(){} }
  public sealed class Shader : Object { public static Shader Find(string n){ return null; } }
  public class Material : Object { public Material(Material m){} public Material(Shader s){} public Color color; public Texture mainTexture; }
  public sealed class MaterialPropertyBlock { public void Clear(){} public void SetVector(string n, Vector4 v){} }
  public class Texture : Object { public int width, height; }
  public enum TextureFormat { RGB24 }
  public sealed class Texture2D : Texture { public Texture2D(int w,int h,TextureFormat f,bool mip,bool linear){} public void ReadPixels(Rect r,int x,int y,bool mip){} }
  public static class ImageConversion { public static byte[] EncodeToPNG(this Texture2D t){ return null; } }
  public enum RenderTextureFormat { ARGB32 } public enum RenderTextureReadWrite { sRGB }
  public sealed class RenderTexture : Texture { public RenderTexture(int w,int h,int d,RenderTextureFormat f,RenderTextureReadWrite rw){} public int antiAliasing; public bool Create(){return true;} public void Release(){} public static RenderTexture active; }
  public struct Rect { public Rect(float x,float y,float w,float h){} }
  public struct Vector2 { public Vector2(float x,float y){} }
  public struct Vector3 { public float x,y,z; public Vector3(float x,float y,float z){this.x=x;this.y=y;this.z=z;} public static Vector3 back, one; public static Vector3 operator*(Vector3 a,float b){return a;} public static Vector3 operator-(Vector3 a){return a;} }
  public struct Vector4 { public Vector4(float x,float y,float z,float w){} }
  public struct Quaternion { public static Quaternion identity; public static Quaternion Euler(float x,float y,float z){return identity;} public static Quaternion LookRotation(Vector3 f){return identity;} public static Quaternion operator*(Quaternion a,Quaternion b){return a;} }
  public struct Color { public float r,g,b,a; public Color(float r,float g,float b){this.r=r;this.g=g;this.b=b;a=1;} public static Color black, white; public static Color operator*(Color c,float f){return c;} }
  public struct Color32 { public Color32(byte r,byte g,byte b,byte a){} public static implicit operator Color(Color32 c){ return new Color(); } }
  public static class Mathf { public const float Deg2Rad = 0.01745f; public static float Cos(float x){return 0;} public static float Sin(float x){return 0;} public static Color CorrelatedColorTemperatureToRGB(float k){return new Color();} }
  public static class RenderSettings { public static Rendering.AmbientMode ambientMode; public static bool fog; public static Material skybox; public static Color ambientLight; }
  public static class Debug { public static void Log(object m){} public static void LogError(object m){} public static void LogWarning(object m){} }
  public enum LogType { Log, Warning } public enum StackTraceLogType { None }
  public static class Application { public static void Quit(int c){} public static void SetStackTraceLogType(LogType t, StackTraceLogType s){} public static bool runInBackground; public static int targetFrameRate; }
  public static class QualitySettings { public static int vSyncCount; }
  public static class SystemInfo { public static Rendering.GraphicsDeviceType graphicsDeviceType; }
  public static class Resources { public static T Load<T>(string p) where T: Object { return null; } }
  public enum RuntimeInitializeLoadType { AfterSceneLoad }
  public sealed class RuntimeInitializeOnLoadMethodAttribute : Attribute { public RuntimeInitializeOnLoadMethodAttribute(RuntimeInitializeLoadType t){} }
  public sealed class TooltipAttribute : Attribute { public TooltipAttribute(string t){} }
  public sealed class CreateAssetMenuAttribute : Attribute { public string fileName, menuName; }
  public enum ColorSpace { Linear } public enum FullScreenMode { Windowed }
}
namespace UnityEngine.Rendering {
  public enum AmbientMode { Flat } public enum ShadowCastingMode { Off } public enum GraphicsDeviceType { Null, Vulkan, OpenGLCore }
  public static class GraphicsSettings { public static bool lightsUseLinearIntensity, lightsUseColorTemperature; }
}
namespace UnityEngine.SceneManagement { public struct Scene {} }
namespace UnityEditor {
  using UnityEngine;
  public static class AssetDatabase { public static T LoadAssetAtPath<T>(string p) where T: Object { return null; } public static void CreateAsset(Object o, string p){} public static void SaveAssets(){} }
  public static class Selection { public static Object activeObject; }
  public sealed class MenuItem : Attribute { public MenuItem(string p){} }
  public static class EditorApplication { public static void Exit(int c){} }
  public enum BuildTarget { StandaloneLinux64 } public enum BuildOptions { None } public enum StandaloneBuildSubtarget { Player }
  public static class PlayerSettings { public static void SetUseDefaultGraphicsAPIs(BuildTarget t,bool b){} public static void SetGraphicsAPIs(BuildTarget t, UnityEngine.Rendering.GraphicsDeviceType[] a){} public static ColorSpace colorSpace; public static bool runInBackground, usePlayerLog; public static FullScreenMode fullScreenMode; }
  public static class EditorUserBuildSettings { public static StandaloneBuildSubtarget standaloneBuildSubtarget; }
  public struct BuildPlayerOptions { public string[] scenes; public string locationPathName; public BuildTarget target; public BuildOptions options; }
  public static class BuildPipeline { public static Build.Reporting.BuildReport BuildPlayer(BuildPlayerOptions o){ return null; } }
  public static class EditorUtility { public static bool DisplayDialog(string a,string b,string c){ return true; } }
}
namespace UnityEditor.Build.Reporting { public enum BuildResult { Succeeded } public class BuildSummary { public BuildResult result; } public class BuildReport { public BuildSummary summary; } }
namespace UnityEditor.SceneManagement {
  public enum NewSceneSetup { EmptyScene } public enum NewSceneMode { Single }
  public static class EditorSceneManager { public static UnityEngine.SceneManagement.Scene NewScene(NewSceneSetup s, NewSceneMode m){ return new UnityEngine.SceneManagement.Scene(); } public static bool SaveScene(UnityEngine.SceneManagement.Scene s, string p){ return true; } }
}
